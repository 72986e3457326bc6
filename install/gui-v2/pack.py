#!/usr/bin/env python3
"""Packs the gui-v2 page into the plugin file gui-v2 loads: dbus-aggregate-batteries.json.

    pack.py [--out FILE] [--rcc PATH] [--page-dir DIR]

gui-v2 reads every *.json in /data/apps/enabled/<app>/gui-v2/: a JSON object with `name`,
`version`, `minRequiredVersion`, `resource` (a binary Qt resource, base64) and `integrations`.
Ours holds one integration of the device-list kind (type 2): a row "Bank and packs" on the
device page of a battery whose /ProductId is ours, which opens page/BankPage.qml.

The resource is made by `rcc --binary` of Qt 6.8 as PyPI's pyside6-essentials ships it (found
beside the PySide6 this Python imports, or given by --rcc), zlib-compressed (every gui-v2 build
reads zlib). The same sources give the same bytes: the files go in sorted by name, rcc is told
a file date made from the sources' hash (QT_RCC_SOURCE_DATE_OVERRIDE; see sources_date), and
the JSON is written with sorted keys.
The plugin's name, its file name and the app folder on the device are the same string.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "dbus-aggregate-batteries"
HERE = Path(__file__).resolve().parent
PAGE_DIR = HERE / "page"
# Our /ProductId as gui-v2 matches it (Utils.toHexFormat: "0x" and upper-case hex digits).
PRODUCT_ID = "0xBA44"
# gui-v2 loads app pages since 1.3.6 (Venus OS v3.80~21).
MIN_GUI_VERSION = "v1.3.6"


def fail(message):
    print(f"pack.py: {message}", file=sys.stderr)
    sys.exit(2)


def service_version():
    """The workspace version in Cargo.toml: the page ships with the daemon of that version."""
    cargo = HERE.parent.parent / "Cargo.toml"
    match = re.search(r'^version\s*=\s*"([^"]+)"', cargo.read_text(), re.MULTILINE)
    if not match:
        fail(f"{cargo}: no version = \"…\" line")
    return match.group(1)


def find_rcc():
    try:
        import PySide6  # noqa: PLC0415 — only to find the rcc it ships
    except ImportError:
        fail("no rcc: install pyside6-essentials==6.8.3 (pip) or pass --rcc")
    rcc = Path(PySide6.__file__).parent / "Qt" / "libexec" / "rcc"
    if not rcc.is_file():
        fail(f"{rcc} is missing from the PySide6 package")
    return str(rcc)


def sources_date(page_dir, files):
    """The file date rcc stores for every file: made from the sources, not the clock.

    A date of the clock would change the bytes at every pack. One fixed date would be worse:
    Qt's QML disk cache takes a compiled file as current while the date of its source is
    unchanged, so a changed page under the same qrc URL would run the old code. A date from
    the sources' hash moves whenever a source does (seconds since 1970, never 0, which rcc
    reads as unset).
    """
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (page_dir / name).read_bytes() + b"\0")
    return int(digest.hexdigest()[:7], 16) + 1


def resource(rcc, page_dir):
    files = sorted(p.name for p in page_dir.iterdir() if p.suffix in (".qml", ".js"))
    if "BankPage.qml" not in files:
        fail(f"{page_dir}/BankPage.qml is missing")
    with tempfile.TemporaryDirectory() as tmp:
        qrc = Path(tmp) / f"{NAME}.qrc"
        entries = "".join(f"<file alias=\"{f}\">{page_dir / f}</file>\n" for f in files)
        qrc.write_text(f"<RCC>\n<qresource prefix=\"/{NAME}\">\n{entries}</qresource>\n</RCC>\n")
        out = Path(tmp) / f"{NAME}.rcc"
        env = dict(os.environ, QT_RCC_SOURCE_DATE_OVERRIDE=str(sources_date(page_dir, files)))
        done = subprocess.run(
            [rcc, "--binary", "--compress-algo", "zlib", "-o", str(out), str(qrc)],
            env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            fail(f"{rcc} failed: {done.stderr.strip()}")
        return base64.b64encode(out.read_bytes()).decode("ascii")


def main():
    parser = argparse.ArgumentParser(description="Packs the gui-v2 page into its plugin file.")
    parser.add_argument("--out", default=str(HERE / f"{NAME}.json"))
    parser.add_argument("--rcc")
    # Another page folder: the tests pack a broken page to see the render fail.
    parser.add_argument("--page-dir", default=str(PAGE_DIR))
    args = parser.parse_args()
    plugin = {
        "name": NAME,
        "version": service_version(),
        "minRequiredVersion": MIN_GUI_VERSION,
        "integrations": [{
            "type": 2,
            "productId": PRODUCT_ID,
            "title": "Bank and packs",
            "url": f"qrc:/{NAME}/BankPage.qml",
        }],
        "resource": resource(args.rcc or find_rcc(), Path(args.page_dir).resolve()),
    }
    out = Path(args.out)
    if out.name != f"{NAME}.json":
        fail(f"--out {out}: the file must be named {NAME}.json (gui-v2 matches it to the app)")
    new = Path(f"{out}.new")
    new.write_text(json.dumps(plugin, indent=2, sort_keys=True) + "\n")
    new.replace(out)
    print(out)


if __name__ == "__main__":
    main()
