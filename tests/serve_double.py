"""A server process for the load tests: `python tests/serve_double.py DB [SETTINGS_JSON]` serves
the test double model (see test_server_api.double_model) with the real uvicorn configuration of
`aiwriter serve` on a free loopback port and prints its URL, then its peak RSS on stdin's EOF."""
import json
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import uvicorn  # noqa: E402
from test_server_api import double_model  # noqa: E402

from aiwriter.server.app import ServerSettings, create_app  # noqa: E402
from aiwriter.server.connections import server_config  # noqa: E402


def main():
    settings = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    delay = settings.pop("delay", 0.0)
    app = create_app(ServerSettings(db=sys.argv[1], **settings), model=double_model(delay), model_name="cycle")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(server_config(app))

    def stop_on_eof():
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
