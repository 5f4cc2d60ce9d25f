// Tests of the drop and picker handlers with recorded stand-ins for Tauri's
// `invoke` and the window. WebDriver cannot drop files from the desktop or
// click in the system's file picker, so these tests feed the handlers the
// payloads that Tauri 2 delivers.
import { test } from "node:test";
import assert from "node:assert/strict";

import { dropHandlers, pathsFromDialog, pathsFromDrop, pickPaths } from "../src/intake.js";

/** Creates a window stand-in that records what the drop handlers do to it. */
function recordingTarget() {
  const calls = { screens: [], added: [], classes: new Set() };
  const target = {
    zone: { classList: { add: (name) => calls.classes.add(name), remove: (name) => calls.classes.delete(name) } },
    showScreen: (name) => calls.screens.push(name),
    addPaths: async (paths) => {
      calls.added.push(paths);
    },
  };
  return { calls, target };
}

test("drop adds paths and shows upload", async () => {
  const { calls, target } = recordingTarget();
  const handlers = dropHandlers(target);
  handlers.enter();
  assert.ok(calls.classes.has("active"), "dragging over the window highlights the drop zone");

  await handlers.drop({ payload: { paths: ["/data/ct-export.zip", "/data/study"], position: { x: 10, y: 20 } } });

  assert.deepEqual(calls.added, [["/data/ct-export.zip", "/data/study"]]);
  assert.deepEqual(calls.screens, ["upload"]);
  assert.ok(!calls.classes.has("active"), "the highlight ends with the drop");
});

test("empty drop adds nothing", async () => {
  const { calls, target } = recordingTarget();
  const handlers = dropHandlers(target);
  handlers.enter();

  await handlers.drop({ payload: { paths: [], position: { x: 0, y: 0 } } });
  await handlers.drop({ payload: null });

  assert.deepEqual(calls.added, []);
  assert.deepEqual(calls.screens, []);
  assert.ok(!calls.classes.has("active"));
});

test("drag leave removes highlight", () => {
  const { calls, target } = recordingTarget();
  const handlers = dropHandlers(target);
  handlers.enter();
  handlers.leave();
  assert.ok(!calls.classes.has("active"));
});

test("drop payload keeps only paths", () => {
  assert.deepEqual(pathsFromDrop({ paths: ["/a", "", 7, "/b"] }), ["/a", "/b"]);
  assert.deepEqual(pathsFromDrop({ position: { x: 1, y: 1 } }), []);
  assert.deepEqual(pathsFromDrop("not an object"), []);
});

test("picker calls dialog open", async () => {
  const requests = [];
  const invoke = async (command, args) => {
    requests.push({ command, args });
    return ["/data/a.pdf", "/data/b.pdf"];
  };

  const paths = await pickPaths(invoke, { directory: false, multiple: true });

  assert.deepEqual(paths, ["/data/a.pdf", "/data/b.pdf"]);
  assert.deepEqual(requests, [{ command: "plugin:dialog|open", args: { options: { directory: false, multiple: true } } }]);
});

test("picker result shapes become lists", async () => {
  assert.deepEqual(await pickPaths(async () => "/data/study", { directory: true, multiple: false }), ["/data/study"]);
  assert.deepEqual(await pickPaths(async () => null, { directory: true, multiple: false }), [], "a cancelled picker");
  assert.deepEqual(pathsFromDialog(undefined), []);
  assert.deepEqual(pathsFromDialog(["/x", ""]), ["/x"]);
});

test("picker failure reaches caller", async () => {
  const invoke = async () => {
    throw new Error("dialog.open not allowed");
  };
  await assert.rejects(pickPaths(invoke, { directory: false, multiple: true }), /not allowed/);
});
