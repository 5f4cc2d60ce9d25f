import { test } from "node:test";
import assert from "node:assert/strict";

import {
  filterLogEntries,
  formatBytes,
  formatEta,
  formatRate,
  progressFraction,
  stateLabel,
  transferActions,
} from "../src/format.js";

test("bytes use binary units", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(200 * 1024 * 1024), "200 MiB");
  assert.equal(formatBytes(null), "–");
});

test("idle speed is blank", () => {
  assert.equal(formatRate(0), "");
  assert.equal(formatRate(2 * 1024 * 1024), "2.0 MiB/s");
});

test("eta reads in minutes and hours", () => {
  assert.equal(formatEta(42), "42 s");
  assert.equal(formatEta(125), "2 min 5 s");
  assert.equal(formatEta(7260), "2 h 1 min");
  assert.equal(formatEta(null), "");
});

test("states read as plain words", () => {
  assert.equal(stateLabel("waiting_for_network"), "Waiting for network");
  assert.equal(stateLabel("completed"), "Done");
  assert.equal(stateLabel("unknown_state"), "unknown_state");
});

test("actions follow the transfer state", () => {
  assert.deepEqual(transferActions("running"), { pause: true, resume: false, cancel: true, retry: false });
  assert.deepEqual(transferActions("paused"), { pause: false, resume: true, cancel: true, retry: false });
  assert.deepEqual(transferActions("failed"), { pause: false, resume: false, cancel: false, retry: true });
  assert.deepEqual(transferActions("completed"), { pause: false, resume: false, cancel: false, retry: false });
  assert.deepEqual(transferActions("stalled"), { pause: false, resume: true, cancel: true, retry: false });
});

test("progress fraction needs a size", () => {
  assert.equal(progressFraction(5, 10), 0.5);
  assert.equal(progressFraction(5, null), null);
  assert.equal(progressFraction(20, 10), 1);
});

const entries = [
  { seq: 1, time: "2026-12-01T10:00:00Z", event: "signed_in", reason: null, user: "Practitioner/tech-okafor", direction: null, patient: null, object: null, file_name: null, size: null, sha256: null },
  { seq: 2, time: "2026-12-04T10:00:00Z", event: "completed", reason: null, user: "Practitioner/tech-okafor", direction: "upload", patient: "Patient/pat-001", object: "DocumentReference/doc-1", file_name: "scan.pdf", size: 10, sha256: "ab" },
  { seq: 3, time: "2026-12-04T11:00:00Z", event: "failed", reason: "store unreachable", user: "Practitioner/tech-okafor", direction: "upload", patient: "Patient/pat-002", object: null, file_name: "ct.zip", size: 10, sha256: null },
];

test("log filter by event", () => {
  assert.deepEqual(filterLogEntries(entries, { event: "failed" }).map((entry) => entry.seq), [3]);
});

test("log filter by text ignores case", () => {
  assert.deepEqual(filterLogEntries(entries, { text: "PAT-001" }).map((entry) => entry.seq), [2]);
  assert.deepEqual(filterLogEntries(entries, { text: "unreachable" }).map((entry) => entry.seq), [3]);
});

test("log filter by date", () => {
  assert.deepEqual(filterLogEntries(entries, { since: "2026-12-04" }).map((entry) => entry.seq), [2, 3]);
  assert.equal(filterLogEntries(entries, {}).length, 3);
});
