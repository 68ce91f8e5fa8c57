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

    def Streaming(self, user_message: UserDefinedMessage):
        for i in range(user_message.num):
            yield UserDefinedResponse(greeting=f"{i}: {user_message.name}", num_x2=i * 2)


app = GrpcGreeter.bind()
