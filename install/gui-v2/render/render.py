#!/usr/bin/env python3
"""Renders the packed gui-v2 page offscreen with values dumped from the service.

    render.py PLUGIN_JSON VALUES_JSON OUT_PNG OUT_TEXTS [PACK...]

Loads PLUGIN_JSON as gui-v2's plugin loader does (checks name, version, resource and
integrations, registers the resource), takes each device-list integration whose productId is
the dumped /ProductId, and creates its url with a stub device whose paths hold VALUES_JSON
(path -> value, as read from the running service). Writes the picture to OUT_PNG and, for the
tests, one line per list item "text<TAB>secondary text<TAB>caption" to OUT_TEXTS. Then each
PACK's row is tapped and its details page listed the same way, after a line "== PACK". Any
QML warning or error fails the run (exit 1).

With RENDER_THEN set to a second values file, the page is given those values after the first
listing, as the service's signals would bring them, and listed again after a line "== then",
itself followed by "rows kept" when every pack row is the same item as before, or
"rows made anew" when not.
"""
import base64
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QMetaObject, QResource, Qt, QUrl, QtMsgType, qInstallMessageHandler  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage  # noqa: E402
from PySide6.QtQml import QQmlComponent, QQmlEngine  # noqa: E402
from PySide6.QtQuick import QQuickItem, QQuickWindow  # noqa: E402
import shiboken6  # noqa: E402

HERE = Path(__file__).resolve().parent
SERVICE_UID = "mock/com.victronenergy.battery.aggregate"
# The GX Touch's width; the height grows to show the whole list (at least the screen's 480).
WIDTH, HEIGHT = 800, 480
PROBLEMS = []


def on_message(kind, context, message):
    if kind != QtMsgType.QtDebugMsg and kind != QtMsgType.QtInfoMsg:
        PROBLEMS.append(message)
    print(message, file=sys.stderr)


def fail(message):
    print(f"render.py: {message}", file=sys.stderr)
    sys.exit(1)


def load_plugin(path):
    """The plugin's integrations, its resource registered (gui-v2's checks, in its order)."""
    plugin = json.loads(Path(path).read_text())
    for key in ("name", "version", "resource"):
        if not isinstance(plugin.get(key), str) or not plugin[key]:
            fail(f"{path}: `{key}` is missing or empty")
    if not isinstance(plugin.get("integrations"), list):
        fail(f"{path}: `integrations` is not a list")
    data = base64.b64decode(plugin["resource"])
    if not QResource.registerResourceData(data):
        fail(f"{path}: the resource does not register")
    return plugin, data


def list_texts(item, out):
    """text, secondaryText and caption of every visible list item, in tree order."""
    if item.isVisible() and item.property("secondaryText") is not None:
        out.append("\t".join(str(item.property(key) or "")
                             for key in ("text", "secondaryText", "caption")))
    for child in item.childItems():
        list_texts(child, out)


def find_row(item, name):
    """The visible pack row (a list item one can tap) whose text is `name`."""
    if (item.isVisible() and item.property("text") == name
            and item.metaObject().indexOfSignal("clicked()") >= 0):
        return item
    for child in item.childItems():
        found = find_row(child, name)
        if found is not None:
            return found
    return None


def rows(item, out):
    """Every visible pack row (a list item one can tap), in tree order."""
    if item.isVisible() and item.metaObject().indexOfSignal("clicked()") >= 0:
        out.append(item)
    for child in item.childItems():
        rows(child, out)
    return out


def content_height(item):
    """The height of the first list view's content below `item` (0: none)."""
    height = item.property("contentHeight")
    if isinstance(height, (int, float)) and height > 0 and item.property("model") is not None:
        return height
    for child in item.childItems():
        found = content_height(child)
        if found:
            return found
    return 0


def main():
    if len(sys.argv) < 5:
        fail("usage: render.py PLUGIN_JSON VALUES_JSON OUT_PNG OUT_TEXTS [PACK...]")
    plugin_path, values_path, png_path, texts_path = sys.argv[1:5]
    packs = sys.argv[5:]
    qInstallMessageHandler(on_message)
    app = QGuiApplication([])
    plugin, keep_alive = load_plugin(plugin_path)
    dumped = json.loads(Path(values_path).read_text())
    product_id = dumped.get("/ProductId")
    if not isinstance(product_id, (int, float)):
        fail(f"{values_path}: no /ProductId")
    wanted = "0x%X" % int(product_id)
    pages = [i for i in plugin["integrations"]
             if i.get("type") == 2 and i.get("productId") == wanted and i.get("url")]
    if not pages:
        fail(f"{plugin_path}: no device-list integration for productId {wanted}")
    values = {SERVICE_UID + path: value for path, value in dumped.items()}

    engine = QQmlEngine()
    engine.addImportPath(str(HERE.parent / "stub"))
    texts = []
    for integration in pages:
        component = QQmlComponent(engine, QUrl.fromLocalFile(str(HERE / "Root.qml")))
        root = component.createWithInitialProperties({
            "pageUrl": QUrl(integration["url"]), "values": values,
            "productId": int(product_id)})
        if root is None:
            fail("Root.qml: " + "; ".join(e.toString() for e in component.errors()))
        window = QQuickWindow()
        window.resize(WIDTH, HEIGHT)
        root.setParentItem(window.contentItem())
        root.setWidth(WIDTH)
        root.setHeight(HEIGHT)
        window.show()
        for _ in range(10):
            app.processEvents()
        page = root.childItems()[0].childItems() if root.childItems() else []
        if not page:
            fail(f"{integration['url']} did not load")
        content = content_height(root)
        if content > HEIGHT:
            window.resize(WIDTH, int(content))
            root.setHeight(int(content))
            for _ in range(10):
                app.processEvents()
        list_texts(root, texts)
        then = os.environ.get("RENDER_THEN")
        if then:
            before = [shiboken6.getCppPointer(row)[0] for row in rows(root, [])]
            root.setProperty("values", {SERVICE_UID + path: value
                                        for path, value in json.loads(Path(then).read_text()).items()})
            for _ in range(10):
                app.processEvents()
            after = [shiboken6.getCppPointer(row)[0] for row in rows(root, [])]
            texts.append("== then")
            texts.append("rows kept" if before and before == after else "rows made anew")
            list_texts(root, texts)
        # 256 colours: the picture stays small enough for the repository.
        image = window.grabWindow().convertToFormat(
            QImage.Format.Format_Indexed8, Qt.ImageConversionFlag.ThresholdDither)
        if image.isNull() or not image.save(png_path):
            fail(f"cannot write {png_path}")
        for pack in packs:
            row = find_row(root, pack)
            if row is None:
                fail(f"no row for the pack {pack}")
            QMetaObject.invokeMethod(row, "clicked")
            for _ in range(10):
                app.processEvents()
            texts.append(f"== {pack}")
            list_texts(root, texts)
            # Back to the bank page for the next pack.
            QMetaObject.invokeMethod(root, "showPage")
            for _ in range(10):
                app.processEvents()
        window.close()
    Path(texts_path).write_text("\n".join(texts) + "\n")
    del keep_alive
    if PROBLEMS:
        fail(f"{len(PROBLEMS)} QML warning(s), the first: {PROBLEMS[0]}")


if __name__ == "__main__":
    main()
