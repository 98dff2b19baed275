"""Checks the artifacts the flake ships, as deployed (nix/checks.nix runs it
in a build; here it only evaluates):

  artifact-checks.py lambda ZIP        bootstrap at the zip root, mode 0755, a
                                       static aarch64 ELF (Lambda arm64,
                                       provided.al2023)
  artifact-checks.py image ARCHIVE PORT
                                       the server image's config: arm64, a
                                       non-root numeric user, PORT exposed and
                                       listened on, the CA bundle, /etc/fluidity
                                       and /tmp in a layer, the revision label
  artifact-checks.py static ARCH BIN...
                                       each binary a static ELF for ARCH
"""
import io
import json
import stat
import sys
import tarfile
import zipfile

MACHINES = {"x86_64": 62, "aarch64": 183}


def elf(data, arch, what):
    """Machine and static linking from the ELF header and program headers."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        sys.exit(f"{what}: not a 64-bit ELF")
    machine = int.from_bytes(data[18:20], "little")
    if machine != MACHINES[arch]:
        sys.exit(f"{what}: ELF machine {machine}, not {arch}")
    phoff, phentsize, phnum = int.from_bytes(data[32:40], "little"), data[54] | data[55] << 8, data[56] | data[57] << 8
    kinds = {int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little") for i in range(phnum)}
    if 3 in kinds:  # PT_INTERP: needs a dynamic loader
        sys.exit(f"{what}: dynamically linked (has an interpreter)")


def lambda_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if names != ["bootstrap"]:
            sys.exit(f"{path}: {names}, not bootstrap alone at the root")
        mode = z.getinfo("bootstrap").external_attr >> 16
        if not mode & stat.S_IXUSR:
            sys.exit(f"{path}: bootstrap is not executable ({oct(mode)})")
        elf(z.read("bootstrap"), "aarch64", "bootstrap")


def image(path, port):
    with tarfile.open(path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]
        config = json.load(archive.extractfile(manifest["Config"]))
        files = set()
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(archive.extractfile(layer).read())) as inner:
                files.update(name.lstrip("./") for name in inner.getnames())
    run = config.get("config", {})
    user = run.get("User", "")
    problems = []
    if config.get("architecture") != "arm64":
        problems.append(f"architecture {config.get('architecture')}, not arm64")
    if not user or any(not part.isdigit() or part == "0" for part in user.split(":")):
        problems.append(f"user {user!r} is not a numeric non-root user")
    if f"{port}/tcp" not in run.get("ExposedPorts", {}):
        problems.append(f"{port}/tcp not exposed: {run.get('ExposedPorts')}")
    if f"FLUIDITY_LISTEN=0.0.0.0:{port}" not in run.get("Env", []):
        problems.append(f"not listening on {port}: {run.get('Env')}")
    if not any(name.endswith("etc/ssl/certs/ca-bundle.crt") for name in files):
        problems.append("no CA bundle at /etc/ssl/certs/ca-bundle.crt")
    for directory in ("etc/fluidity", "tmp"):
        if directory not in {name.rstrip("/") for name in files}:
            problems.append(f"no /{directory}")
    if not run.get("Labels", {}).get("org.opencontainers.image.revision"):
        problems.append("no org.opencontainers.image.revision label")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems))


def main(argv):
    if argv[:1] == ["lambda"] and len(argv) == 2:
        lambda_zip(argv[1])
    elif argv[:1] == ["image"] and len(argv) == 3:
        image(argv[1], argv[2])
    elif argv[:1] == ["static"] and len(argv) >= 3:
        for binary in argv[2:]:
            elf(open(binary, "rb").read(), argv[1], binary)
    else:
        sys.exit(__doc__)
    print("ok:", " ".join(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
