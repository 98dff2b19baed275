#!/usr/bin/env python3
"""nix/artifact-checks.py's own tests (the flake's artifact checks cannot be
built here): each contract it enforces fails on an artifact that breaks it."""
import importlib.util
import io
import json
import os
import tarfile
import tempfile
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("checks", os.path.join(HERE, "..", "nix", "artifact-checks.py"))
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)


def elf(machine, interpreter=False):
    """A minimal 64-bit ELF header with one or two program headers."""
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    header[18:20] = machine.to_bytes(2, "little")
    header[32:40] = (64).to_bytes(8, "little")
    header[54], header[56] = 56, 2
    load = (1).to_bytes(4, "little") + bytes(52)
    interp = (3 if interpreter else 6).to_bytes(4, "little") + bytes(52)
    return bytes(header) + load + interp


class Artifacts(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def fails(self, argv, needle):
        with self.assertRaises(SystemExit) as raised:
            checks.main(argv)
        self.assertIn(needle, str(raised.exception))

    def zip_with(self, name, data, mode=0o755):
        path = os.path.join(self.dir, "f.zip")
        with zipfile.ZipFile(path, "w") as z:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
        return path

    def test_lambda_zip(self):
        checks.main(["lambda", self.zip_with("bootstrap", elf(183))])
        self.fails(["lambda", self.zip_with("bootstrap", elf(62))], "not aarch64")
        self.fails(["lambda", self.zip_with("bootstrap", elf(183, interpreter=True))], "dynamically linked")
        self.fails(["lambda", self.zip_with("bootstrap", elf(183), mode=0o644)], "not executable")
        self.fails(["lambda", self.zip_with("bin/bootstrap", elf(183))], "not bootstrap alone")

    def image(self, architecture="arm64", user="65532:65532", port="443", ca=True, dirs=("etc/fluidity", "tmp"),
              revision="0123abcd"):
        config = {"architecture": architecture, "config": {
            "User": user, "ExposedPorts": {f"{port}/tcp": {}}, "Env": [f"FLUIDITY_LISTEN=0.0.0.0:{port}"],
            "Labels": {"org.opencontainers.image.revision": revision}}}
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as t:
            if ca:
                t.addfile(tarfile.TarInfo("./etc/ssl/certs/ca-bundle.crt"), io.BytesIO())
            for directory in dirs:
                info = tarfile.TarInfo(f"./{directory}")
                info.type = tarfile.DIRTYPE
                t.addfile(info)
        path = os.path.join(self.dir, "image.tar")
        with tarfile.open(path, "w") as t:
            for name, data in [("manifest.json", json.dumps([{"Config": "c.json", "Layers": ["l.tar"]}]).encode()),
                               ("c.json", json.dumps(config).encode()), ("l.tar", layer.getvalue())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return path

    def test_server_image(self):
        checks.main(["image", self.image(), "443"])
        self.fails(["image", self.image(architecture="amd64"), "443"], "not arm64")
        self.fails(["image", self.image(user="0"), "443"], "non-root")
        self.fails(["image", self.image(user=""), "443"], "non-root")
        self.fails(["image", self.image(port="8443"), "443"], "443/tcp not exposed")
        self.fails(["image", self.image(ca=False), "443"], "no CA bundle")
        self.fails(["image", self.image(dirs=("tmp",)), "443"], "no /etc/fluidity")
        self.fails(["image", self.image(revision=""), "443"], "revision label")

    def test_static_binaries(self):
        path = os.path.join(self.dir, "agent")
        open(path, "wb").write(elf(62))
        checks.main(["static", "x86_64", path])
        self.fails(["static", "aarch64", path], "not aarch64")
        open(path, "wb").write(elf(62, interpreter=True))
        self.fails(["static", "x86_64", path], "dynamically linked")


if __name__ == "__main__":
    unittest.main()
