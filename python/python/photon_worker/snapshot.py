"""`python -m photon_worker snapshot SRC ROOT EXCLUDES_JSON LIMIT`: what Ray uploads of a local
`working_dir` or `py_modules` directory, copied under ROOT: every file of SRC but those that
`runtime_env.excludes` (gitignore-style patterns relative to SRC) or a `.gitignore` /
`.rayignore` file (patterns relative to its own directory) exclude, refusing more than LIMIT
bytes. The copy is named by the hash of what it holds (paths, sizes, modification times), so an
unchanged directory is copied once; prints the copy's path. As in Ray, replicas see the files as
they were when the application was deployed."""

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile


def _translate(body):
    """A gitignore pattern's body as a regular expression."""
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("/**", i) and i + 3 == len(body):
            out.append("/.*")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and "]" in body[i + 1 :]:
            end = body.index("]", i + 1)
            inner = body[i + 1 : end]
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < len(body):
            out.append(re.escape(body[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_patterns(lines):
    """(regex, negated) for each pattern of a gitignore file or an `excludes` list."""
    rules = []
    for line in lines:
        p = line.rstrip("\n").rstrip()
        if not p or p.startswith("#"):
            continue
        negated = p.startswith("!")
        if negated:
            p = p[1:]
        dir_only = p.endswith("/")
        p = p.rstrip("/")
        if not p:
            continue
        # A slash at the start or in the middle anchors the pattern to its directory.
        anchored = "/" in p
        body = _translate(p.lstrip("/"))
        prefix = "" if anchored else "(?:.*/)?"
        tail = "/.*" if dir_only else "(?:/.*)?"
        rules.append((re.compile("^" + prefix + body + tail + "$", re.DOTALL), negated))
    return rules


def excluded(rules, rel):
    """Whether the last pattern that matches `rel` (relative, `/`-separated; directories end
    with `/`) excludes it."""
    verdict = False
    for regex, negated in rules:
        if regex.match(rel):
            verdict = not negated
    return verdict


def walk(src, excludes):
    """(relative path, absolute path) of every file kept, directories pruned as excluded."""
    scopes = [("", compile_patterns(excludes))]

    def visit(rel_dir, scopes):
        here = os.path.join(src, rel_dir)
        local = []
        for name in (".gitignore", ".rayignore"):
            ignore = os.path.join(here, name)
            if os.path.isfile(ignore):
                with open(ignore, encoding="utf-8", errors="replace") as f:
                    local.extend(compile_patterns(f.readlines()))
        if local:
            scopes = scopes + [(rel_dir, local)]
        for entry in sorted(os.scandir(here), key=lambda e: e.name):
            rel = rel_dir + entry.name
            is_dir = entry.is_dir()
            probe = rel + "/" if is_dir else rel
            if any(excluded(rules, probe[len(base) :]) for base, rules in scopes):
                continue
            if is_dir:
                yield from visit(rel + "/", scopes)
            elif entry.is_file():
                yield rel, entry.path

    yield from visit("", scopes)


def main(src, root, excludes_json, limit):
    src = os.path.realpath(src)
    files = list(walk(src, json.loads(excludes_json)))
    digest = hashlib.sha256(src.encode())
    total = 0
    for rel, path in files:
        st = os.stat(path)
        total += st.st_size
        digest.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        if total >= limit:
            sys.exit(
                f"{src} holds {total} bytes of files or more, over the package limit of {limit} bytes (Ray's, RAY_max_grpc_message_size): exclude large files "
                "with runtime_env.excludes or a .gitignore / .rayignore file, or give a .zip archive by URL"
            )
    dest = os.path.join(root, digest.hexdigest()[:16])
    # The copy keeps the directory's name: a py_modules directory is imported by it.
    target = os.path.join(dest, os.path.basename(src))
    if not os.path.isdir(target):
        os.makedirs(root, exist_ok=True)
        work = tempfile.mkdtemp(dir=root, prefix=".snapshot-")
        for rel, path in files:
            out = os.path.join(work, os.path.basename(src), rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copy2(path, out)
        os.makedirs(os.path.join(work, os.path.basename(src)), exist_ok=True)
        open(os.path.join(work, ".ready"), "w").close()
        try:
            os.rename(work, dest)
        except OSError:  # made meanwhile by another deploy
            shutil.rmtree(work, ignore_errors=True)
    # Its last use, for the cache's least-recently-used bound.
    os.utime(os.path.join(dest, ".ready"))
    print(target)
