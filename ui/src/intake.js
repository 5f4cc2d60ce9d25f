// @ts-check
/**
 * Handlers of the paths that enter the Upload and Download screens: files
 * dropped on the window and the results of the system's file and folder picker.
 * The handlers take the Tauri and DOM parts they use as arguments, so that
 * node's test runner can call them with recorded stand-ins.
 */

/**
 * Calls a Tauri command, as `window.__TAURI__.core.invoke` does.
 * @typedef {(command: string, args?: Record<string, unknown>) => Promise<any>} Invoke
 */

/**
 * Options of the dialog plugin's `open` command.
 * @typedef {{directory: boolean, multiple: boolean, title?: string}} PickOptions
 */

/**
 * Turns the dialog plugin's `open` result into a list of paths: `null` when
 * the user cancelled, one path, or a list when `multiple` was set.
 * @param {unknown} result
 * @returns {string[]}
 */
export function pathsFromDialog(result) {
  if (result === null || result === undefined) return [];
  const values = Array.isArray(result) ? result : [result];
  return values.filter((value) => typeof value === "string" && value !== "");
}

/**
 * Opens the system's file or folder picker through the dialog plugin and
 * returns the chosen paths; an empty list when the user cancels.
 * @param {Invoke} invoke
 * @param {PickOptions} options
 * @returns {Promise<string[]>}
 */
export async function pickPaths(invoke, options) {
  const result = await invoke("plugin:dialog|open", { options });
  return pathsFromDialog(result);
}

/**
 * Paths of a `tauri://drag-drop` event, whose payload is
 * `{paths: string[], position: {x, y}}` in Tauri 2.
 * @param {unknown} payload
 * @returns {string[]}
 */
export function pathsFromDrop(payload) {
  if (payload === null || typeof payload !== "object") return [];
  const paths = /** @type {{paths?: unknown}} */ (payload).paths;
  return Array.isArray(paths) ? paths.filter((path) => typeof path === "string" && path !== "") : [];
}

/**
 * The parts of the window that a drop changes.
 * @typedef {object} DropTarget
 * @property {{classList: {add(name: string): void, remove(name: string): void}}} zone
 *   the drop zone, highlighted while files are dragged over the window
 * @property {(name: string) => void} showScreen
 * @property {(paths: string[]) => Promise<void>} addPaths
 *   inspects the paths and lists them for upload
 */

/**
 * Creates the listeners of the window's drag-and-drop events. A drop shows
 * the Upload screen and adds the dropped paths; an empty drop changes
 * nothing but the highlight.
 * @param {DropTarget} target
 */
export function dropHandlers(target) {
  return {
    /** Listener of `tauri://drag-enter`. */
    enter() {
      target.zone.classList.add("active");
    },
    /** Listener of `tauri://drag-leave`. */
    leave() {
      target.zone.classList.remove("active");
    },
    /**
     * Listener of `tauri://drag-drop`; resolves once the paths are added.
     * @param {{payload: unknown}} event
     * @returns {Promise<void>}
     */
    async drop(event) {
      target.zone.classList.remove("active");
      const paths = pathsFromDrop(event.payload);
      if (paths.length === 0) return;
      target.showScreen("upload");
      await target.addPaths(paths);
    },
  };
}
