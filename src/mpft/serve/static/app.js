// The page: send the chosen image to /api/v1/predict, show the verdict, then fetch the heatmap.
// All server text is inserted with textContent (never innerHTML).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const input = $("file-input");
  const drop = $("drop");
  let previewUrl = null;
  let heatmapUrl = null;

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  // A request-level failure (415, 413, ...) has no result to show: hide the whole card, so
  // that neither an empty card nor a preview the browser cannot draw stays above the error.
  function failRequest(message) {
    $("result").hidden = true;
    $("preview").removeAttribute("src");
    showError(message);
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      const d = body.detail;
      return typeof d === "string" ? d : JSON.stringify(d);
    } catch (e) {
      return resp.status + " " + resp.statusText;
    }
  }

  function reset(file) {
    $("error").hidden = true;
    $("result").hidden = false;
    $("verdict").textContent = "scoring…";
    $("verdict").dataset.verdict = "";
    $("probability").textContent = "…";
    $("threshold").textContent = "…";
    $("notes").textContent = "";
    $("explain-status").textContent = "";
    $("model-id").textContent = "";
    $("heatmap-figure").hidden = true;
    $("preview-figure").hidden = false;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    $("preview").src = previewUrl;
  }

  async function predict(file) {
    const form = new FormData();
    form.append("files", file, file.name);
    const resp = await fetch("/api/v1/predict", { method: "POST", body: form });
    if (!resp.ok) {
      failRequest("Could not score the image: " + (await errorText(resp)));
      return false;
    }
    const r = (await resp.json()).results[0];
    $("model-id").textContent = r.model_id;
    $("threshold").textContent = r.threshold.toFixed(2);
    if (r.error) {
      $("verdict").textContent = "error";
      $("verdict").dataset.verdict = "error";
      $("probability").textContent = "—";
      showError("This file could not be read: " + r.error);
      return false;
    }
    $("verdict").textContent = r.verdict;
    $("verdict").dataset.verdict = r.verdict;
    $("probability").textContent = (100 * r.probability).toFixed(1) + "%";
    $("notes").textContent = r.notes.length ? "Notes: " + r.notes.join("; ") : "";
    return true;
  }

  async function explain(file) {
    $("explain-status").textContent = "computing the heatmap…";
    const form = new FormData();
    form.append("file", file, file.name);
    const resp = await fetch("/api/v1/explain", { method: "POST", body: form });
    if (!resp.ok) {
      $("explain-status").textContent = "No heatmap: " + (await errorText(resp));
      return;
    }
    if (heatmapUrl) URL.revokeObjectURL(heatmapUrl);
    heatmapUrl = URL.createObjectURL(await resp.blob());
    $("heatmap").src = heatmapUrl;
    $("heatmap-figure").hidden = false;
    $("explain-status").textContent = "";
  }

  async function handle(file) {
    if (!file) return;
    reset(file);
    try {
      if (await predict(file)) await explain(file);
    } catch (e) {
      failRequest("The server could not be reached: " + e);
    }
  }

  // A file the browser cannot draw (not an image, or truncated) must not leave a broken-image icon.
  $("preview").addEventListener("error", () => {
    if ($("preview").getAttribute("src")) $("preview-figure").hidden = true;
  });

  input.addEventListener("change", () => handle(input.files[0]));
  ["dragenter", "dragover"].forEach((ev) =>
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) =>
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => handle(e.dataTransfer.files[0]));
})();
