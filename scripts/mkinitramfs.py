#!/usr/bin/env python3
"""Writes a newc cpio initramfs whose /init is the given agent binary, with /dev/console, without
needing root (a device node cannot be created by mknod as a user, but a cpio entry can)."""
import os
import stat
import sys


def entry(out, ino, name, mode, data=b"", rdev=(0, 0)):
    name_b = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
    out.write(name_b + b"\0" * ((-(110 + len(name_b))) % 4))
    out.write(data + b"\0" * ((-len(data)) % 4))


def main(agent, dest):
    with open(agent, "rb") as f:
        binary = f.read()
    with open(dest, "wb") as out:
        ino = 1
        for d in ["dev", "proc", "sys", "rootfs", "tmp"]:
            entry(out, ino, d, stat.S_IFDIR | 0o755)
            ino += 1
        entry(out, ino, "dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        entry(out, ino + 1, "init", stat.S_IFREG | 0o755, binary)
        entry(out, 0, "TRAILER!!!", 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
