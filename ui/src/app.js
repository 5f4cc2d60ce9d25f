// @ts-check
/**
 * The Ferry window: screens over the Tauri commands of `src-tauri/`.
 * The UI passes paths and ids to the shell; file bytes never cross the bridge.
 */
import {
  filterLogEntries,
  formatBytes,
  formatEta,
  formatRate,
  progressFraction,
  stateLabel,
  transferActions,
} from "./format.js";
import { dropHandlers, pickPaths } from "./intake.js";

const tauri = /** @type {any} */ (window).__TAURI__;

/**
 * Calls a command of the shell; a failure shows its message and rethrows.
 * @param {string} command
 * @param {Record<string, unknown>} [args]
 * @returns {Promise<any>}
 */
async function call(command, args = {}) {
  try {
    const result = await tauri.core.invoke(command, args);
    showError("");
    return result;
  } catch (error) {
    showError(String(error));
    throw error;
  }
}

/** @param {string} message */
function showError(message) {
  const box = byId("error");
  box.textContent = message;
  box.hidden = message === "";
}

/**
 * @param {string} id
 * @returns {HTMLElement & {value: string, disabled: boolean, checked: boolean}}
 */
function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return /** @type {any} */ (element);
}

/**
 * Creates an element with attributes and children; text is never parsed as HTML.
 * @param {string} tag
 * @param {Record<string, string | boolean | number | null | undefined>} [attributes]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElement}
 */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) element.append(child);
  }
  return element;
}

/** @type {{session: any, sessionProblem: string | null, patient: any, inputs: string[], inspections: any[], transfers: Map<string, any>, log: any[]}} */
const model = {
  session: null,
  sessionProblem: null,
  patient: null,
  inputs: [],
  inspections: [],
  transfers: new Map(),
  log: [],
};

// ---- Navigation -----------------------------------------------------------

/** @param {string} name */
function showScreen(name) {
  for (const button of document.querySelectorAll("nav button[data-screen]")) {
    const current = button.getAttribute("data-screen") === name;
    if (current) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll("main > section")) {
    /** @type {HTMLElement} */ (section).hidden = section.id !== `screen-${name}`;
  }
  const refresh = /** @type {Record<string, () => Promise<void>>} */ ({
    transfers: refreshTransfers,
    log: refreshLog,
    settings: loadSettings,
    download: refreshDocuments,
  })[name];
  if (refresh) refresh().catch(() => {});
  const heading = document.querySelector(`#screen-${name} h1`);
  if (heading instanceof HTMLElement) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

// ---- Sign in ----------------------------------------------------------------

async function loadProfiles() {
  const view = await call("profiles_list");
  const select = byId("profile-select");
  select.replaceChildren(
    ...view.profiles.map((/** @type {any} */ profile) =>
      h("option", { value: profile.name, selected: profile.name === view.selected }, `${profile.name} — ${profile.fhir_base_url}`),
    ),
  );
}

/** @param {any} session */
function renderSession(session) {
  model.session = session;
  const status = byId("session-status");
  if (!session) {
    status.replaceChildren(h("dt", {}, "Signed in"), h("dd", {}, "No"));
    byId("header-session").textContent = "Not signed in";
  } else {
    const user = session.fhir_user ?? "unknown user";
    status.replaceChildren(
      h("dt", {}, "User"), h("dd", { id: "session-user" }, user),
      h("dt", {}, "Server"), h("dd", {}, session.fhir_base_url),
      h("dt", {}, "Role"), h("dd", {}, session.kind === "clinician" ? "Clinician" : "Imaging staff"),
      h("dt", {}, "Patient context"), h("dd", {}, session.patient ? `Patient/${session.patient}` : "None: chosen per transfer"),
      h("dt", {}, "Signed in at"), h("dd", {}, session.signed_in_at),
    );
    byId("header-session").textContent = `Signed in as ${user} (${session.profile})`;
  }
  byId("sign-out").disabled = !session;
  if (!session && model.sessionProblem) byId("sign-in-prompt").textContent = model.sessionProblem;
}

/** @param {any} patient */
function renderPatient(patient) {
  model.patient = patient;
  const text = patient ? `${patient.name || "unnamed"} (Patient/${patient.id}${patient.birth_date ? `, born ${patient.birth_date}` : ""})` : "no patient chosen";
  byId("header-patient").textContent = patient ? `Patient: ${text}` : "No patient chosen";
  for (const span of document.querySelectorAll(".chosen-patient")) span.textContent = text;
  const context = model.session?.patient;
  byId("patient-context").textContent = context
    ? `This clinician sign-in is for Patient/${context}.`
    : "Imaging staff choose the patient for each upload or download.";
  updateUploadButton();
}

async function refreshSessionAndPatient() {
  model.sessionProblem = await call("session_problem");
  renderSession(await call("session_get"));
  renderPatient(await call("patient_get"));
}

// ---- Patient ----------------------------------------------------------------

async function searchPatients() {
  const patients = await call("patient_search", { query: byId("patient-query").value });
  const body = /** @type {HTMLElement} */ (byId("patient-results").querySelector("tbody"));
  body.replaceChildren(
    ...patients.map((/** @type {any} */ patient) =>
      h("tr", { "data-patient-id": patient.id },
        h("td", {}, patient.name),
        h("td", {}, patient.birth_date ?? ""),
        h("td", {}, patient.identifier ?? ""),
        h("td", {}, patient.id),
        h("td", {}, chooseButton(patient)),
      ),
    ),
  );
  if (patients.length === 0) body.append(h("tr", {}, h("td", { colspan: 5 }, "No patient found.")));
}

/** @param {any} patient */
function chooseButton(patient) {
  const button = h("button", { type: "button", class: "choose-patient", "aria-label": `Choose ${patient.name} (${patient.id})` }, "Choose");
  button.addEventListener("click", async () => renderPatient(await call("patient_choose", { id: patient.id })));
  return button;
}

// ---- Upload -----------------------------------------------------------------

/** @param {string[]} paths */
async function addUploadPaths(paths) {
  const fresh = paths.filter((path) => path && !model.inputs.includes(path));
  if (fresh.length === 0) return;
  model.inputs.push(...fresh);
  const inspections = await call("upload_inspect", { paths: fresh });
  model.inspections.push(...inspections);
  renderInspections();
}

function renderInspections() {
  const container = byId("upload-inspection");
  container.replaceChildren(...model.inspections.map(renderInspection));
  const blocked = model.inspections.some((inspection) => inspection.kind === "study" && inspection.verdict.verdict !== "match");
  byId("upload-reason-row").hidden = !blocked;
  updateUploadButton();
}

function updateUploadButton() {
  const valid = model.inspections.length > 0 && model.inspections.every((inspection) => inspection.kind !== "invalid");
  byId("upload-start").disabled = !(valid && model.patient);
}

/** @param {any} inspection */
function renderInspection(inspection) {
  switch (inspection.kind) {
    case "file":
    case "archive":
      return h("div", { class: "inspection", "data-path": inspection.path },
        h("h2", {}, inspection.name),
        h("dl", {},
          h("dt", {}, "Path"), h("dd", {}, inspection.path),
          h("dt", {}, "Size"), h("dd", {}, formatBytes(inspection.size)),
          h("dt", {}, "Type"), h("dd", {}, inspection.media_type ?? "application/zip (no DICOM instances)"),
        ));
    case "study":
      return renderStudy(inspection);
    default:
      return h("div", { class: "inspection", "data-path": inspection.path },
        h("h2", {}, inspection.path), h("p", { class: "verdict-bad" }, inspection.message));
  }
}

/** @param {any} inspection */
function renderStudy(inspection) {
  const scan = inspection.scan;
  const verdict = inspection.verdict;
  const parts = [h("h2", {}, `Study in ${inspection.path}`)];
  for (const study of scan.studies) {
    parts.push(h("p", {}, `Patient in the files: ${study.patient.name ?? "–"}, ID ${study.patient.id ?? "–"}, born ${study.patient.birth_date ?? "–"}. ${study.description ?? ""} ${study.study_date ?? ""}`));
    parts.push(h("table", {},
      h("caption", {}, "Series"),
      h("thead", {}, h("tr", {}, ...["#", "Modality", "Description", "Instances", "Size"].map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, ...study.series.map((/** @type {any} */ series) => h("tr", {},
        h("td", {}, String(series.number ?? "")),
        h("td", {}, series.modality ?? ""),
        h("td", {}, series.description ?? ""),
        h("td", { class: "num" }, String(series.instance_count)),
        h("td", { class: "num" }, formatBytes(series.bytes)),
      ))),
    ));
  }
  if (scan.set_aside.length > 0) {
    parts.push(h("details", {},
      h("summary", {}, `${scan.set_aside.length} file(s) set aside`),
      h("ul", {}, ...scan.set_aside.map((/** @type {any} */ file) => h("li", {}, `${file.path}: ${file.message}`))),
    ));
  }
  const reasons = verdict.reasons ?? [];
  parts.push(verdict.verdict === "match"
    ? h("p", { class: "verdict-ok", id: "guard-verdict" }, "Patient guard: the study matches the chosen patient.")
    : h("div", { class: "verdict-bad", id: "guard-verdict" }, "Patient guard: this upload is blocked.",
      h("ul", {}, ...(verdict.verdict === "multiple_patients" ? [`The files hold ${verdict.patients.length} patients.`, ...reasons] : verdict.verdict === "no_instances" ? ["No valid DICOM instance."] : reasons).map((/** @type {string} */ reason) => h("li", {}, reason)))));
  return h("div", { class: "inspection", "data-path": inspection.path }, ...parts);
}

async function startUpload() {
  const reason = byId("upload-reason").value.trim();
  const ids = await call("upload_start", { paths: model.inputs, confirmReason: reason || null });
  clearUpload();
  await refreshTransfers();
  showScreen("transfers");
  return ids;
}

function clearUpload() {
  model.inputs = [];
  model.inspections = [];
  byId("upload-reason").value = "";
  renderInspections();
}

/**
 * Opens the system's file or folder picker and returns the chosen paths.
 * @param {{directory: boolean, multiple: boolean}} options
 * @returns {Promise<string[]>}
 */
async function choosePaths(options) {
  return pickPaths(tauri.core.invoke, options);
}

// ---- Download ---------------------------------------------------------------

async function refreshDocuments() {
  if (!model.session || !model.patient) return;
  const documents = await call("documents_list");
  const body = /** @type {HTMLElement} */ (byId("documents-table").querySelector("tbody"));
  body.replaceChildren(
    ...documents.map((/** @type {any} */ document) =>
      h("tr", { "data-document-id": document.id },
        h("td", {}, h("input", { type: "checkbox", class: "document-select", value: document.id, "aria-label": `Select ${document.file_name}` })),
        h("td", {}, document.file_name),
        h("td", { class: "num" }, formatBytes(document.size)),
        h("td", {}, document.media_type),
        h("td", {}, document.date),
        h("td", {}, document.id),
      ),
    ),
  );
  if (documents.length === 0) body.append(h("tr", {}, h("td", { colspan: 6 }, "No documents for this patient.")));
}

async function startDownload() {
  const documentIds = [...document.querySelectorAll("input.document-select:checked")].map((box) => /** @type {HTMLInputElement} */ (box).value);
  const folder = byId("download-folder").value.trim();
  await call("download_start", { documentIds, folder: folder || null });
  await refreshTransfers();
}

function renderDownloadResults() {
  const done = [...model.transfers.values()].filter((transfer) => transfer.direction === "download");
  byId("download-results").replaceChildren(
    ...done.map((transfer) => h("li", { "data-transfer-id": transfer.id, "data-state": transfer.state },
      transfer.state === "completed" && transfer.destination_path
        ? `${transfer.file_name} saved to ${transfer.destination_path}`
        : `${transfer.file_name}: ${stateLabel(transfer.state)}${transfer.error ? ` — ${transfer.error}` : ""}`)),
  );
}

// ---- Transfers --------------------------------------------------------------

async function refreshTransfers() {
  renderTransfersNotice();
  if (!model.session) return;
  const transfers = await call("transfers_list");
  model.transfers = new Map(transfers.map((/** @type {any} */ transfer) => [transfer.id, transfer]));
  const body = /** @type {HTMLElement} */ (byId("transfers-table").querySelector("tbody"));
  body.replaceChildren(...transfers.map(transferRow));
  renderBadge();
  renderDownloadResults();
}

/**
 * Shows on the Transfers screen, while no user is signed in, that the
 * journal's transfers are listed and resumed after sign-in, and why the
 * stored sign-in failed.
 */
function renderTransfersNotice() {
  const notice = byId("transfers-notice");
  if (model.session) {
    notice.replaceChildren();
    notice.hidden = true;
    return;
  }
  const problem = model.sessionProblem ? ` ${model.sessionProblem}` : "";
  const open = h("button", { type: "button", id: "transfers-sign-in" }, "Open the Sign-in screen");
  open.addEventListener("click", () => showScreen("signin"));
  notice.replaceChildren(
    h("p", {}, `Not signed in: transfers are listed, and interrupted ones continue, after you sign in.${problem}`),
    open,
  );
  notice.hidden = false;
}

/** @param {any} transfer */
function transferRow(transfer) {
  const row = h("tr", { "data-transfer-id": transfer.id });
  fillTransferRow(row, transfer);
  return row;
}

/**
 * @param {HTMLElement} row
 * @param {any} transfer
 */
function fillTransferRow(row, transfer) {
  // A transfer that the journal lists as active but that this app does
  // not run is shown as stalled, with the shell's reason and a way out.
  const shownState = transfer.stalled ? "stalled" : transfer.state;
  row.setAttribute("data-state", shownState);
  const fraction = progressFraction(transfer.bytes_done, transfer.size);
  const bar = h("progress", { max: 1, "aria-label": `Progress of ${transfer.file_name}` });
  if (fraction !== null) /** @type {HTMLProgressElement} */ (bar).value = fraction;
  const actions = transferActions(shownState);
  const buttons = [];
  for (const [action, label] of /** @type {const} */ ([["pause", "Pause"], ["resume", "Resume"], ["cancel", "Cancel"], ["retry", "Retry"]])) {
    if (!actions[action]) continue;
    const button = h("button", { type: "button", class: `transfer-${action}`, "aria-label": `${label} ${transfer.file_name}` }, label);
    button.addEventListener("click", () => transferAction(action, transfer.id));
    buttons.push(button);
  }
  const state = h("td", { class: `state state-${shownState}` }, stateLabel(shownState));
  if (transfer.stalled) state.append(h("div", { class: "reason" }, transfer.stalled));
  else if (transfer.state === "failed" && transfer.error) state.append(h("div", { class: "reason" }, transfer.error));
  row.replaceChildren(
    h("td", {}, transfer.file_name),
    h("td", {}, transfer.direction === "upload" ? "Upload" : "Download"),
    h("td", {}, bar, " ", `${formatBytes(transfer.bytes_done)} of ${formatBytes(transfer.size)}`),
    h("td", { class: "num" }, formatRate(transfer.bytes_per_second)),
    h("td", { class: "num" }, formatEta(transfer.eta_seconds)),
    state,
    h("td", {}, ...buttons),
  );
}

/**
 * @param {"pause" | "resume" | "cancel" | "retry"} action
 * @param {string} id
 */
async function transferAction(action, id) {
  const command = { pause: "transfer_pause", resume: "transfer_resume", cancel: "transfer_cancel", retry: "transfer_resume" }[action];
  await call(command, { id });
  await refreshTransfers();
}

function renderBadge() {
  const active = [...model.transfers.values()].filter((transfer) => transferActions(transfer.state).pause).length;
  byId("transfers-badge").textContent = active > 0 ? `(${active} active)` : "";
}

/** Progress events waiting for the next frame, by transfer id. */
const pendingProgress = new Map();
let frameRequested = false;

/**
 * Queues a progress event; rows are redrawn at most once per frame, so
 * many running transfers cost one layout per frame.
 * @param {any} transfer
 */
function onProgress(transfer) {
  pendingProgress.set(transfer.id, transfer);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(flushProgress);
}

function flushProgress() {
  frameRequested = false;
  const body = /** @type {HTMLElement} */ (byId("transfers-table").querySelector("tbody"));
  for (const transfer of pendingProgress.values()) {
    model.transfers.set(transfer.id, transfer);
    const row = body.querySelector(`tr[data-transfer-id="${CSS.escape(transfer.id)}"]`);
    if (row instanceof HTMLElement) fillTransferRow(row, transfer);
    else body.prepend(transferRow(transfer));
  }
  pendingProgress.clear();
  renderBadge();
  renderDownloadResults();
}

// ---- Log --------------------------------------------------------------------

async function refreshLog() {
  if (!model.session) return;
  model.log = await call("log_show");
  renderLog();
}

function renderLog() {
  const entries = filterLogEntries(model.log, {
    event: byId("log-filter-event").value,
    text: byId("log-filter-text").value,
    since: byId("log-filter-since").value,
  }).reverse();
  const body = /** @type {HTMLElement} */ (byId("log-table").querySelector("tbody"));
  body.replaceChildren(...entries.map((entry) => h("tr", { "data-seq": entry.seq },
    h("td", { class: "num" }, String(entry.seq)),
    h("td", {}, entry.time),
    h("td", {}, entry.event.replaceAll("_", " "), entry.reason ? h("div", { class: "reason" }, entry.reason) : null),
    h("td", {}, entry.user ?? ""),
    h("td", {}, entry.patient ?? ""),
    h("td", {}, entry.file_name ?? entry.object ?? ""),
    h("td", { class: "num" }, entry.size === null ? "" : formatBytes(entry.size)),
  )));
}

async function verifyLog() {
  const result = byId("log-verify-result");
  result.textContent = "Verifying…";
  const report = await call("log_verify");
  result.replaceChildren(report.ok
    ? h("p", { class: "verdict-ok", id: "log-verified" }, `The log verified: ${report.entries} entries in ${report.records} records, hash chain and signatures intact${report.unsealed_tail ? `; the last ${report.unsealed_tail} record(s) are not sealed yet` : ""}.`)
    : h("div", { class: "verdict-bad", id: "log-verify-failed" }, "The log failed verification:",
      h("ul", {}, ...report.problems.map((/** @type {string} */ problem) => h("li", {}, problem)))));
  await refreshLog();
}

// ---- Settings ---------------------------------------------------------------

async function loadSettings() {
  const settings = await call("settings_get");
  byId("settings-parts").value = String(settings.parts_in_flight);
  byId("settings-cap").value = settings.bandwidth_cap_kib ? String(settings.bandwidth_cap_kib) : "";
  byId("settings-folder").value = settings.download_folder ?? "";
  if (!byId("download-folder").value && settings.download_folder) byId("download-folder").value = settings.download_folder;
}

async function saveSettings() {
  const cap = byId("settings-cap").value.trim();
  const folder = byId("settings-folder").value.trim();
  const settings = await call("settings_set", {
    settings: {
      parts_in_flight: Number(byId("settings-parts").value),
      bandwidth_cap_kib: cap ? Number(cap) : null,
      download_folder: folder || null,
      profile: null,
    },
  });
  byId("settings-status").textContent = `Saved: ${settings.parts_in_flight} parts in flight.`;
  if (settings.download_folder) byId("download-folder").value = settings.download_folder;
}

/** Key of the window's zoom in percent in `localStorage`. */
const ZOOM_KEY = "ferry.zoom";

/**
 * Zooms the page like a browser's page zoom, which also narrows the layout
 * viewport, so that the layout for narrow windows applies at 200 %.
 * WebKitGTK has no zoom shortcut in Tauri, so the Settings screen offers it.
 * @param {number} percent
 */
async function applyZoom(percent) {
  await tauri.webview.getCurrentWebview().setZoom(percent / 100);
  byId("settings-zoom").value = String(percent);
  localStorage.setItem(ZOOM_KEY, String(percent));
}

// ---- Wiring -----------------------------------------------------------------

/**
 * Runs an async handler, leaving errors to the error box that `call` fills.
 * @param {() => Promise<unknown>} handler
 */
function quietly(handler) {
  return () => {
    handler().catch(() => {});
  };
}

/**
 * @param {string} id
 * @param {() => Promise<unknown>} handler
 */
function onClick(id, handler) {
  byId(id).addEventListener("click", quietly(handler));
}

/**
 * @param {string} id
 * @param {() => Promise<unknown>} handler
 */
function onSubmit(id, handler) {
  byId(id).addEventListener("submit", (event) => {
    event.preventDefault();
    quietly(handler)();
  });
}

async function start() {
  for (const button of document.querySelectorAll("nav button[data-screen]")) {
    button.addEventListener("click", () => showScreen(button.getAttribute("data-screen") ?? "signin"));
  }
  byId("profile-select").addEventListener("change", quietly(async () => {
    await call("profile_select", { name: byId("profile-select").value });
  }));
  onClick("profile-add", async () => {
    await call("profile_add", { name: byId("profile-name").value, fhirBaseUrl: byId("profile-url").value });
    byId("profile-name").value = "";
    byId("profile-url").value = "";
    await loadProfiles();
  });
  onClick("sign-in", async () => {
    byId("sign-in").disabled = true;
    byId("sign-in-prompt").textContent = "Waiting for the sign-in to finish in the browser…";
    try {
      renderSession(await call("sign_in", { kind: byId("sign-in-kind").value }));
      renderPatient(await call("patient_get"));
      byId("sign-in-prompt").textContent = "";
    } finally {
      byId("sign-in").disabled = false;
    }
  });
  onClick("sign-out", async () => {
    await call("sign_out");
    renderSession(null);
    renderPatient(null);
  });
  onSubmit("patient-form", searchPatients);
  onClick("upload-choose-files", async () => addUploadPaths(await choosePaths({ directory: false, multiple: true })));
  onClick("upload-choose-folder", async () => addUploadPaths(await choosePaths({ directory: true, multiple: true })));
  onSubmit("upload-path-form", async () => {
    const path = byId("upload-path").value.trim();
    byId("upload-path").value = "";
    await addUploadPaths([path]);
  });
  onClick("upload-start", startUpload);
  onClick("upload-clear", async () => clearUpload());
  onClick("documents-refresh", refreshDocuments);
  onClick("download-choose-folder", async () => {
    const [folder] = await choosePaths({ directory: true, multiple: false });
    if (folder) byId("download-folder").value = folder;
  });
  onClick("download-start", startDownload);
  onClick("log-verify", verifyLog);
  onClick("log-refresh", refreshLog);
  byId("log-filters").addEventListener("input", renderLog);
  onSubmit("settings-form", saveSettings);
  byId("settings-zoom").addEventListener("change", quietly(() => applyZoom(Number(byId("settings-zoom").value))));
  onClick("settings-choose-folder", async () => {
    const [folder] = await choosePaths({ directory: true, multiple: false });
    if (folder) byId("settings-folder").value = folder;
  });

  await tauri.event.listen("transfer-progress", (/** @type {any} */ event) => onProgress(event.payload));
  await tauri.event.listen("session-changed", quietly(async () => {
    await refreshSessionAndPatient();
    await refreshTransfers();
  }));
  await tauri.event.listen("sign-in-prompt", (/** @type {any} */ event) => {
    byId("sign-in-prompt").textContent = String(event.payload);
  });
  const drop = dropHandlers({ zone: byId("drop-zone"), showScreen, addPaths: addUploadPaths });
  await tauri.event.listen("tauri://drag-drop", (/** @type {any} */ event) => quietly(() => drop.drop(event))());
  await tauri.event.listen("tauri://drag-enter", drop.enter);
  await tauri.event.listen("tauri://drag-leave", drop.leave);

  const zoom = Number(localStorage.getItem(ZOOM_KEY) ?? "100");
  if (zoom !== 100) await applyZoom(zoom).catch(() => {});
  await loadProfiles();
  await loadSettings();
  await refreshSessionAndPatient();
  await refreshTransfers();
  document.body.setAttribute("data-ready", "true");
}

start().catch((error) => showError(`The window failed to start: ${error}`));
