# A Python deployment behind the gRPC front door, in the shape of Ray's gRPC guide: methods
# get the request message and return (or yield) reply messages.
import grpc
from ray import serve
from serve_pb2 import UserDefinedMessage, UserDefinedResponse


@serve.deployment
class GrpcGreeter:
    def __call__(self, user_message: UserDefinedMessage) -> UserDefinedResponse:
        greeting = f"Hello {user_message.name} from {user_message.foo}"
        return UserDefinedResponse(greeting=greeting, num_x2=user_message.num * 2)

    async def Method1(self, user_message: UserDefinedMessage, grpc_context) -> UserDefinedResponse:
        # The gRPC context: the client's metadata in, a status and trailing metadata out.
        if user_message.name == "missing":
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details("no user named missing")
            return UserDefinedResponse()
        client = dict(grpc_context.invocation_metadata()).get("x-client", "")
        grpc_context.set_trailing_metadata([("x-served-by", "photon")])
        return UserDefinedResponse(greeting=f"Method1 {user_message.name} for {client}", num_x2=-1)

    def Streaming(self, user_message: UserDefinedMessage, grpc_context):
        # `foo` picks where the method sets its own status: before the last reply, after it, or
        # not at all; `raise` raises after the first reply.
        for i in range(user_message.num):
            if i == user_message.num - 1 and user_message.foo == "status-before-last":
                grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
                grpc_context.set_details(f"stopped at {i}")
                grpc_context.set_trailing_metadata([("x-stopped-at", str(i))])
            if i == 1 and user_message.foo == "raise":
                raise ValueError(f"failed at {i}")
            yield UserDefinedResponse(greeting=f"{i}: {user_message.name}", num_x2=i * 2)
        if user_message.foo == "status-after-last":
            grpc_context.set_code(grpc.StatusCode.ABORTED)
            grpc_context.set_details("set after the last reply")


app = GrpcGreeter.bind()
