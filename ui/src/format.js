// @ts-check
/**
 * Pure helpers of the UI: number and state formatting and log filters.
 * They touch no DOM and no Tauri API, so node's test runner covers them.
 */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/**
 * Formats a byte count with binary units, e.g. `1.5 MiB`.
 * @param {number | null | undefined} bytes
 * @returns {string}
 */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return "–";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

/**
 * Formats a speed in bytes per second, e.g. `12 MiB/s`; empty when idle.
 * @param {number} bytesPerSecond
 * @returns {string}
 */
export function formatRate(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "";
  return `${formatBytes(bytesPerSecond)}/s`;
}

/**
 * Formats a time to completion, e.g. `2 min 5 s`; empty when unknown.
 * @param {number | null | undefined} seconds
 * @returns {string}
 */
export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${whole % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Words shown for each transfer state of the journal. */
export const STATE_LABELS = Object.freeze({
  queued: "Queued",
  running: "Running",
  paused: "Paused",
  waiting_for_network: "Waiting for network",
  verifying: "Verifying",
  completed: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
  stalled: "Not running",
});

/**
 * Returns the words for a transfer state.
 * @param {string} state
 * @returns {string}
 */
export function stateLabel(state) {
  return /** @type {Record<string, string>} */ (STATE_LABELS)[state] ?? state;
}

/**
 * Returns which actions a transfer in `state` offers.
 * @param {string} state
 * @returns {{pause: boolean, resume: boolean, cancel: boolean, retry: boolean}}
 */
export function transferActions(state) {
  const active = ["queued", "running", "waiting_for_network", "verifying"].includes(state);
  return {
    pause: active,
    resume: state === "paused" || state === "stalled",
    cancel: active || state === "paused" || state === "stalled",
    retry: state === "failed",
  };
}

/**
 * Returns the completed fraction from 0 to 1, or null when the size is unknown.
 * @param {number} done
 * @param {number | null | undefined} total
 * @returns {number | null}
 */
export function progressFraction(done, total) {
  if (!total || total <= 0) return null;
  return Math.min(1, Math.max(0, done / total));
}

/**
 * @typedef {object} LogEntry
 * @property {number} seq
 * @property {string} time
 * @property {string} event
 * @property {string | null} reason
 * @property {string | null} user
 * @property {string | null} direction
 * @property {string | null} patient
 * @property {string | null} object
 * @property {string | null} file_name
 * @property {number | null} size
 * @property {string | null} sha256
 */

/**
 * @typedef {object} LogFilter
 * @property {string} [event] an event name, or empty for all
 * @property {string} [text] text to find in the patient, object, file or user, ignoring case
 * @property {string} [since] an ISO date or time; entries before it are left out
 */

/**
 * Returns the entries that match every filter that is set.
 * @param {LogEntry[]} entries
 * @param {LogFilter} filter
 * @returns {LogEntry[]}
 */
export function filterLogEntries(entries, filter) {
  const text = (filter.text ?? "").trim().toLowerCase();
  const since = filter.since ? Date.parse(filter.since) : NaN;
  return entries.filter((entry) => {
    if (filter.event && entry.event !== filter.event) return false;
    if (!Number.isNaN(since) && Date.parse(entry.time) < since) return false;
    if (text) {
      const haystack = [entry.patient, entry.object, entry.file_name, entry.user, entry.reason]
        .filter(Boolean)
        .join(" ")
        .toLowerCase();
      if (!haystack.includes(text)) return false;
    }
    return true;
  });
}
