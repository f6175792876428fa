#!/usr/bin/env python3
"""tests/cluster/oci-image.py: writes a one-layer OCI image-layout tarball, the format
`ctr images import` reads, from files on this machine. No registry, no base image, no
container engine: a layer tar, a config and a manifest, addressed by their sha256.

  oci-image.py --name mainstay.test/pause:v1 --out pause.tar \
      --file /path/to/pause:/pause --entrypoint /pause [--user 65535] \
      [--env KEY=VALUE] [--dir /tmp:1777] [--binary-with-libs /path/to/bin:/bin/app]

--file SRC:DEST[:MODE]        copies SRC to DEST in the image (mode defaults to SRC's)
--binary-with-libs SRC:DEST   copies a dynamically linked binary and every shared library
                              `ldd` lists for it (with the dynamic loader), at their paths
--dir PATH[:MODE]             an empty directory (owned by --user when given)
The image's layer is uncompressed and its timestamps fixed, so the same inputs give the same
digest.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

EPOCH = 0


def fail(msg):
    print(f"oci-image.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def shared_libraries(binary):
    """The absolute paths of the shared libraries `ldd` lists for `binary` (the loader too)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        # A static binary: `ldd` says "not a dynamic executable".
        return []
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


class Layer:
    def __init__(self, uid):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()
        self.uid = uid

    def _parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.add_dir("/" + "/".join(parts[:i]), 0o755, owned=False)

    def add_dir(self, path, mode, owned=True):
        name = path.strip("/")
        if not name or name in self.dirs:
            return
        self._parents(path)
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = EPOCH
        if owned and self.uid is not None:
            info.uid = info.gid = self.uid
        self.tar.addfile(info)
        self.dirs.add(name)

    def add_file(self, src, dest, mode=None):
        name = dest.strip("/")
        if name in self.dirs:
            return
        self._parents(dest)
        real = os.path.realpath(src)
        with open(real, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode if mode is not None else (os.stat(real).st_mode & 0o7777)
        info.mtime = EPOCH
        self.tar.addfile(info, io.BytesIO(data))
        self.dirs.add(name)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def blob(out, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
    info.size = len(data)
    info.mtime = EPOCH
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the image reference, e.g. mainstay.test/pause:v1")
    p.add_argument("--out", required=True)
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--binary-with-libs", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", type=int)
    p.add_argument("--workdir", default="/")
    a = p.parse_args()
    if ":" not in a.name.rsplit("/", 1)[-1]:
        fail(f"--name {a.name} needs a tag (an untagged reference means :latest, which a kubelet pulls)")

    layer = Layer(a.user)
    for spec in a.dir:
        path, _, mode = spec.partition(":")
        layer.add_dir(path, int(mode, 8) if mode else 0o755)
    for spec in a.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            fail(f"--file {spec}: expected SRC:DEST[:MODE]")
        if not os.path.isfile(parts[0]):
            fail(f"--file {spec}: {parts[0]} is not a file")
        layer.add_file(parts[0], parts[1], int(parts[2], 8) if len(parts) == 3 else None)
    for spec in a.binary_with_libs:
        src, _, dest = spec.partition(":")
        if not os.path.isfile(src) or not dest:
            fail(f"--binary-with-libs {spec}: expected SRC:DEST with SRC a file")
        layer.add_file(src, dest, 0o755)
        for lib in shared_libraries(src):
            layer.add_file(lib, lib)
    layer_bytes = layer.bytes()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": a.entrypoint or None,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + a.env,
            "WorkingDir": a.workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        "history": [{"created_by": "tests/cluster/oci-image.py"}],
    }
    if a.user is not None:
        config["config"]["User"] = f"{a.user}:{a.user}"

    with open(a.out, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as out:
        layer_desc = blob(out, layer_bytes, "application/vnd.oci.image.layer.v1.tar")
        config_desc = blob(out, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = blob(out, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {
            "io.containerd.image.name": a.name,
            "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[1],
        }
        for name, data in [
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}, sort_keys=True).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = EPOCH
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    print(f"{a.name} {manifest_desc['digest']} ({len(layer_bytes)} bytes of layer) -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
