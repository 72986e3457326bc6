#!/usr/bin/env python3
"""patterns.py [--any-crate] [--all FILE]: reads symbol names, one a line, and writes for each
the section pattern that names the same function in any build of this workspace, for any
target (generate.sh).

What differs between builds and targets is taken out of a name:
- v0 names (`_R…`, the scheme `.cargo/config.toml` asks for): the crate ids (`Cs<id>_`), the
  back references (`B<offset>_`, which move with the ids' lengths), the impls' numbers
  (`Ms<n>_`, `Xs<n>_`: a new impl block in a module renumbers those after it) and the instantiating
  crate (the crate that happened to make an instance of a generic function: after link-time
  optimisation, one of several identical copies, not always the same one) become `*`;
- legacy names (`_ZN…`): the hash (`17h<16 hex>E`);
- LLVM's numbered copies (`.123`, `.llvm.123`).

The instantiating crate (the crate that made an instance of a generic function: after
link-time optimisation, one of several identical copies, and not the same one in every build)
becomes `*` with `--any-crate`. That costs the linker: a pattern that ends in `*` is matched in
full against every section whose name starts like it, one that ends in a name is rejected at
its end. The daemon's link (of an optimised build only) takes 6 s longer with it; a plugin's
19 s, so the plugins' list keeps the crate, and `--all FILE` (every name of the binaries) adds
the instances of the same function that other crates made.

A v0 name is read by its grammar (the Rust symbol mangling scheme, v0), so that an
identifier's bytes are never taken for a crate id or a back reference. A name it cannot read
is written as it is, without the numbered copy.
"""

import re
import sys

BASIC = set("abcdefhijlmnostuvxyz")


class Unreadable(Exception):
    pass


class V0:
    """One v0 name, read from `pos`, copied into `out` with the varying parts as `*`."""

    def __init__(self, text):
        self.s = text
        self.pos = 0
        self.out = []

    def peek(self):
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def take(self, n=1):
        part = self.s[self.pos : self.pos + n]
        if len(part) < n:
            raise Unreadable
        self.pos += n
        self.out.append(part)
        return part

    def base62(self, keep=True):
        """`{0-9a-zA-Z} _`: copied, or written as `*_` when it varies between builds."""
        start = self.pos
        while self.peek().isalnum():
            self.pos += 1
        if self.peek() != "_":
            raise Unreadable
        self.pos += 1
        self.out.append(self.s[start : self.pos] if keep else "*_")

    def decimal(self):
        """`0`, or digits that do not start with 0."""
        start = self.pos
        if self.peek() == "0":
            self.pos += 1
        else:
            while self.peek().isdigit():
                self.pos += 1
        if start == self.pos:
            raise Unreadable
        self.out.append(self.s[start : self.pos])
        return int(self.s[start : self.pos])

    def undisambiguated_identifier(self):
        if self.peek() == "u":
            self.take()
        n = self.decimal()
        if self.peek() == "_":
            self.take()
        self.take(n) if n else None

    def identifier(self, keep_disambiguator=True):
        if self.peek() == "s":
            self.take()
            self.base62(keep_disambiguator)
        self.undisambiguated_identifier()

    def backref(self):
        self.take()  # B
        self.base62(keep=False)

    def path(self):
        c = self.peek()
        if c == "C":
            self.take()
            # The crate root's disambiguator is the crate id.
            self.identifier(keep_disambiguator=False)
        elif c == "M":
            self.take()
            self.impl_path()
            self.type_()
        elif c == "X":
            self.take()
            self.impl_path()
            self.type_()
            self.path()
        elif c == "Y":
            self.take()
            self.type_()
            self.path()
        elif c == "N":
            self.take()
            if not self.peek().isalpha():
                raise Unreadable
            self.take()  # namespace
            self.path()
            self.identifier()
        elif c == "I":
            self.take()
            self.path()
            while self.peek() != "E":
                self.generic_arg()
            self.take()
        elif c == "B":
            self.backref()
        else:
            raise Unreadable

    def impl_path(self):
        # The impl's disambiguator numbers the impl blocks of its module: one block added
        # before it renumbers it. The type (and trait) that follow tell the impls apart.
        if self.peek() == "s":
            self.take()
            self.base62(keep=False)
        self.path()

    def lifetime(self):
        self.take()  # L
        self.base62()

    def binder(self):
        if self.peek() == "G":
            self.take()
            self.base62()

    def generic_arg(self):
        c = self.peek()
        if c == "L":
            self.lifetime()
        elif c == "K":
            self.take()
            self.const()
        else:
            self.type_()

    def const(self):
        c = self.peek()
        if c == "p":
            self.take()
        elif c == "B":
            self.backref()
        else:
            self.type_()
            if self.peek() == "n":
                self.take()
            start = self.pos
            while self.peek() in "0123456789abcdef" and self.peek():
                self.pos += 1
            if self.peek() != "_":
                raise Unreadable
            self.pos += 1
            self.out.append(self.s[start : self.pos])

    def type_(self):
        c = self.peek()
        if c in BASIC or c == "p":
            self.take()
        elif c == "A":
            self.take()
            self.type_()
            self.const()
        elif c == "S" or c == "P" or c == "O":
            self.take()
            self.type_()
        elif c == "T":
            self.take()
            while self.peek() != "E":
                self.type_()
            self.take()
        elif c == "R" or c == "Q":
            self.take()
            if self.peek() == "L":
                self.lifetime()
            self.type_()
        elif c == "F":
            self.take()
            self.binder()
            if self.peek() == "U":
                self.take()
            if self.peek() == "K":
                self.take()
                if self.peek() == "C":
                    self.take()
                else:
                    self.undisambiguated_identifier()
            while self.peek() != "E":
                self.type_()
            self.take()
            self.type_()
        elif c == "D":
            self.take()
            self.binder()
            while self.peek() != "E":
                self.path()
                while self.peek() == "p":
                    self.take()
                    self.undisambiguated_identifier()
                    self.type_()
            self.take()
            self.lifetime()
        elif c == "B":
            self.backref()
        else:
            self.path()


def v0_read(name):
    """The pattern of a v0 name, and where its path ends (the instantiating crate follows)."""
    reader = V0(name)
    reader.take(2)  # _R
    if reader.peek().isdigit():
        reader.decimal()
    reader.path()
    end = len("".join(reader.out))
    if reader.pos < len(name):
        reader.path()
    if reader.pos != len(name):
        raise Unreadable
    return "".join(reader.out), end


def function(name):
    """What the instances of one function made by different crates share: the pattern of
    its path."""
    name = re.sub(r"\.(llvm\.)?[0-9]+$", "", name)
    if name.startswith("_R"):
        try:
            made, end = v0_read(name)
            return made[:end]
        except (Unreadable, IndexError):
            pass
    return name


def pattern(name, any_crate=False):
    name, copies = re.subn(r"\.(llvm\.)?[0-9]+$", "", name)
    star = "*" if copies else ""
    if name.startswith("_R"):
        try:
            made, end = v0_read(name)
            if any_crate and end < len(made):
                return made[:end] + "*"
            return made + star
        except (Unreadable, IndexError):
            return name + star
    if name.startswith("_ZN"):
        name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)
    return name + star


def main():
    args = sys.argv[1:]
    any_crate = "--any-crate" in args
    instances = {}
    if "--all" in args:
        with open(args[args.index("--all") + 1]) as every:
            for line in every:
                name = line.strip()
                instances.setdefault(function(name), []).append(name)
    seen = set()
    for line in sys.stdin:
        name = line.strip()
        for each in [name] + instances.get(function(name), []):
            made = pattern(each, any_crate)
            if made and made not in seen:
                seen.add(made)
                print(made)


if __name__ == "__main__":
    main()
