#!/usr/bin/env python3
"""Write a single-layer OCI image archive without a container engine.

    oci_image.py --rootfs DIR --out FILE.tar --ref NAME:TAG --epoch SECONDS \
        --dockerfile Dockerfile --build-arg KEY=VALUE ...
    oci_image.py --print-config --dockerfile Dockerfile --build-arg KEY=VALUE ...

The image's description (labels, env, user, exposed ports, entrypoint, cmd) is read from the
final stage of the Dockerfile, the one place it is written: `docker build` and `make image`
describe the same image. `--print-config` prints that part of the OCI config and exits.

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that also carries
a Docker `manifest.json`, the same dual format `docker save` writes since Docker 25, so that
`docker load`, `podman load`, `kind load image-archive` (containerd) and `skopeo` accept it.
Everything is reproducible: files sorted, owner root, mtimes and the gzip header set to EPOCH.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import stat
import tarfile

# Instructions of the final stage that describe the image (the rest build its files).
DESCRIBING = {"LABEL", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "WORKDIR"}
BUILDING = {"FROM", "ARG", "COPY", "ADD", "RUN"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(rootfs: str, epoch: int) -> bytes:
    """The rootfs as an uncompressed tar: root-owned, sorted, fixed mtimes, no special files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries, key=lambda p: os.path.relpath(p, rootfs)):
            rel = os.path.relpath(path, rootfs)
            st = os.lstat(path)
            info = tarfile.TarInfo(rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = epoch
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.mode = 0o755  # whatever the umask was: traversable by uid 65532
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                raise SystemExit(f"unsupported file type in rootfs: {rel}")
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def rfc3339(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def instructions(path: str):
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuations joined."""
    logical, out = "", []
    for line in open(path, encoding="utf-8").read().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def substitute(text: str, variables: dict) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: variables.get(m.group(1) or m.group(2), ""),
        text,
    )


def dockerfile_config(path: str, build_args: dict) -> dict:
    """The OCI config the final stage of the Dockerfile describes, with `build_args` applied."""
    stages, stage = [], None
    for word, rest in instructions(path):
        if word == "FROM":
            stage = []
            stages.append(stage)
        elif stage is not None:
            stage.append((word, rest))
    variables, config = {}, {"WorkingDir": "/"}
    for word, rest in stages[-1]:
        if word not in DESCRIBING | BUILDING:
            raise SystemExit(f"{path}: {word} in the final stage is not understood by {__file__}")
        if word == "ARG":
            name, _, default = rest.partition("=")
            variables[name] = build_args.get(name, default)
            continue
        value = substitute(rest, variables)
        if word in ("LABEL", "ENV"):
            pairs = dict(kv.split("=", 1) for kv in shlex.split(value))
            if word == "LABEL":
                config.setdefault("Labels", {}).update(pairs)
            else:
                config.setdefault("Env", []).extend(f"{k}={v}" for k, v in pairs.items())
        elif word == "USER":
            config["User"] = value
        elif word == "EXPOSE":
            ports = config.setdefault("ExposedPorts", {})
            ports.update({(p if "/" in p else f"{p}/tcp"): {} for p in value.split()})
        elif word in ("ENTRYPOINT", "CMD"):
            config[word.capitalize()] = json.loads(value)
        elif word == "WORKDIR":
            config["WorkingDir"] = value
    return config


def build_args(args) -> dict:
    return dict(kv.split("=", 1) for kv in args.build_arg)


def image_config(args, diff_id: str) -> dict:
    config = dockerfile_config(args.dockerfile, build_args(args))
    return {
        "created": rfc3339(args.epoch),
        "architecture": args.arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": rfc3339(args.epoch), "created_by": "scripts/image.sh"}],
    }


def write_archive(args) -> dict:
    raw = layer_tar(args.rootfs, args.epoch)
    layer = gzip_bytes(raw)
    config = json.dumps(image_config(args, sha256(raw)), sort_keys=True).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{sha256(config)}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{sha256(layer)}",
                    "size": len(layer),
                }
            ],
            "annotations": json.loads(config)["config"].get("Labels", {}),
        },
        sort_keys=True,
    ).encode()
    tag = args.ref.rsplit(":", 1)[1]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{sha256(manifest)}",
                    "size": len(manifest),
                    "platform": {"architecture": args.arch, "os": "linux"},
                    "annotations": {
                        # containerd (kind, nerdctl) and Docker >= 25 name the image by this.
                        "io.containerd.image.name": args.ref,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    # The Docker archive format (`docker load` with the classic store, podman's docker-archive).
    docker_manifest = json.dumps(
        [
            {
                "Config": f"blobs/sha256/{sha256(config)}",
                "RepoTags": [args.ref],
                "Layers": [f"blobs/sha256/{sha256(layer)}"],
            }
        ]
    ).encode()
    files = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", index),
        ("manifest.json", docker_manifest),
    ] + [(f"blobs/sha256/{sha256(b)}", b) for b in (config, manifest, layer)]
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, args.epoch
            tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, args.epoch
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    return {
        "manifest": f"sha256:{sha256(manifest)}",
        "layer_bytes": len(layer),
        "uncompressed_bytes": len(raw),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dockerfile", required=True, help="the image's description")
    p.add_argument("--build-arg", action="append", default=[], help="KEY=VALUE for its ARGs")
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.add_argument("--rootfs")
    p.add_argument("--out")
    p.add_argument("--ref", help="NAME:TAG the loaders give the image")
    p.add_argument("--epoch", type=int, help="timestamps (SOURCE_DATE_EPOCH)")
    p.add_argument("--arch", default="amd64")
    args = p.parse_args()
    if args.print_config:
        print(json.dumps(dockerfile_config(args.dockerfile, build_args(args)), sort_keys=True))
        return
    if None in (args.rootfs, args.out, args.ref, args.epoch):
        raise SystemExit("--rootfs, --out, --ref and --epoch are needed to write an archive")
    if ":" not in args.ref.rsplit("/", 1)[-1]:
        raise SystemExit(f"--ref needs a tag: {args.ref}")
    print(json.dumps(write_archive(args)))


if __name__ == "__main__":
    main()
