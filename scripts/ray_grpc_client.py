"""Calls Photon's gRPC front door with the client stubs Ray generates from its own serve.proto
(ray.serve.generated), as a Ray Serve user's gRPC client would. Usage: ray_grpc_client.py HOST:PORT
"""
import sys
import time

import grpc
from ray.serve.generated import serve_pb2, serve_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
api = serve_pb2_grpc.RayServeAPIServiceStub(channel)
names = list(api.ListApplications(serve_pb2.ListApplicationsRequest()).application_names)
assert names == ["greeter", "slow"], names
assert api.Healthz(serve_pb2.HealthzRequest()).message == "success"

greeter = serve_pb2_grpc.UserDefinedServiceStub(channel)
app = (("application", "greeter"),)
reply, call = greeter.__call__.with_call(serve_pb2.UserDefinedMessage(name="foo", foo="bar", num=3), metadata=app)
assert (reply.greeting, reply.num_x2) == ("Hello foo from bar", 6), reply
assert any(k == "request_id" for k, _ in call.trailing_metadata())

start = time.time()
arrivals = []
for m in greeter.Streaming(serve_pb2.UserDefinedMessage(name="foo", foo="bar", num=3), metadata=app):
    arrivals.append((time.time() - start, m.greeting, m.num_x2))
assert [a[1] for a in arrivals] == [f"{i}: Hello foo from bar" for i in range(10)], arrivals
assert [a[2] for a in arrivals] == [6 + i for i in range(10)], arrivals
assert arrivals[-1][0] - arrivals[0][0] >= 0.8, arrivals

try:
    greeter.__call__(serve_pb2.UserDefinedMessage(name="x"), metadata=(("application", "nope"),))
    raise AssertionError("unknown application was accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e
    assert e.details().startswith("Application 'nope' not found."), e.details()

futures = [greeter.__call__.future(serve_pb2.UserDefinedMessage(), metadata=(("application", "slow"),)) for _ in range(6)]
codes = []
for f in futures:
    try:
        f.result()
        codes.append(grpc.StatusCode.OK)
    except grpc.RpcError as e:
        codes.append(e.code())
assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4 and codes.count(grpc.StatusCode.OK) == 2, codes
print("grpcio client generated from Ray's serve.proto: ListApplications, Healthz, __call__, Streaming, NOT_FOUND, RESOURCE_EXHAUSTED ok")
