# A FastAPI WebSocket route on a deployment class, in the shape of Ray's HTTP guide.
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from ray import serve

api = FastAPI()


@serve.deployment
@serve.ingress(api)
class Echo:
    def __init__(self):
        self.prefix = "echo: "

    @api.websocket("/ws")
    async def echo(self, websocket: WebSocket):
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") == "bye":
                    await websocket.close(code=4000, reason="done")
                    return
                if message.get("text") is not None:
                    await websocket.send_text(self.prefix + message["text"])
                else:
                    await websocket.send_bytes(message["bytes"][::-1])
        except WebSocketDisconnect:
            pass

    @api.get("/")
    def root(self):
        return "plain HTTP too"


app = Echo.bind()
