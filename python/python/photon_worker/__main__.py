import json
import os
import sys


def _spec():
    return json.loads(os.environ.get("PHOTON_PYTHON_APP") or "{}")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if sys.version_info < (3, 9):
        message = f"Python deployments need Python 3.9 or newer; {sys.executable} is {sys.version.split()[0]}"
        if command == "discover":
            print(json.dumps({"error": message}))
        sys.stderr.write(message + "\n")
        sys.exit(1)
    if command == "discover":
        from photon_worker import discover

        discover.main(_spec())
    elif command == "fetch" and len(sys.argv) == 5:
        from photon_worker import fetch

        fetch.main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "pack" and len(sys.argv) == 4:
        from photon_worker import fetch

        fetch.pack(sys.argv[2], sys.argv[3])
    elif command == "snapshot" and len(sys.argv) == 6:
        from photon_worker import snapshot

        snapshot.main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif command == "serve" and len(sys.argv) == 3:
        from photon_worker import replica

        replica.main(sys.argv[2], _spec())
    else:
        sys.stderr.write("usage: python -m photon_worker discover | serve SOCKET | fetch URL DEST LIMIT | snapshot SRC ROOT EXCLUDES LIMIT | pack DIR OUT\n")
        sys.exit(2)
