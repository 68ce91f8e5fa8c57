"""`python -m photon_worker fetch URL DEST LIMIT`: downloads a `.zip` archive (`https://`,
`http://`, `file://`, as Ray's remote `working_dir` and `py_modules`), refusing one larger than
LIMIT bytes or with a member outside DEST, unpacks it into DEST and prints the directory to
use: the archive's single top-level directory if it has one (as Ray does), else DEST.

A `.whl` URL (a `py_modules` wheel) is installed into DEST instead, as Ray installs one:
`pip install WHEEL --target DEST`, its dependencies included; prints DEST.

`python -m photon_worker pack DIR OUT` is the other way round, for replicas on other machines:
DIR as a `.zip` archive whose single top-level directory is DIR's name (so that unpacking it
gives DIR back, name included), written to OUT."""

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile

MACOS = "__MACOSX"


def download(url, path, limit):
    with urllib.request.urlopen(url) as response, open(path, "wb") as out:
        size = 0
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                sys.exit(f"{url} is larger than the limit of {limit // (1 << 20)} MiB")
            out.write(chunk)


def install_wheel(url, dest, limit):
    with tempfile.TemporaryDirectory() as work:
        # pip reads the name, version and tags from the file name.
        wheel = os.path.join(work, os.path.basename(urllib.parse.urlparse(url).path))
        download(url, wheel, limit)
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"]
        done = subprocess.run(command + [wheel, "--target", dest], capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            sys.exit(f"pip could not install {os.path.basename(wheel)}: " + (lines[-1] if lines else f"exit {done.returncode}"))
    print(dest)


def pack(directory, out):
    directory = os.path.realpath(directory)
    top = os.path.basename(directory)
    work = out + f".{os.getpid()}.tmp"
    with zipfile.ZipFile(work, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(directory, top)
        for parent, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(parent, name)
                z.write(path, os.path.join(top, os.path.relpath(path, directory)))
    os.replace(work, out)


def main(url, dest, limit):
    if urllib.parse.urlparse(url).path.endswith(".whl"):
        return install_wheel(url, dest, limit)
    archive = dest + ".zip"
    download(url, archive, limit)
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.split("/")[0] != MACOS]
            root = os.path.realpath(dest)
            for name in names:
                target = os.path.realpath(os.path.join(dest, name))
                if target != root and not target.startswith(root + os.sep):
                    sys.exit(f"{url}: the member {name!r} would land outside the directory")
            z.extractall(dest, members=names)
    except zipfile.BadZipFile as e:
        sys.exit(f"{url} is not a zip archive: {e}")
    finally:
        os.remove(archive)
    shutil.rmtree(os.path.join(dest, MACOS), ignore_errors=True)
    tops = {n.split("/")[0] for n in names}
    single = len(tops) == 1 and all("/" in n for n in names)
    print(os.path.join(dest, tops.pop()) if single else dest)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
