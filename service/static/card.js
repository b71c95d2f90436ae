// The model card: a summary of GET /models/{name} (manifest, MC settings, calibration) and the training
// reports of its artifact (GET /models/{name}/reports), fetched with the API key and shown as images.

import { ApiError, api, blob } from "./api.js";
import { el } from "./render.js";

const REPORT_TITLES = {
  "reliability.png": "Reliability diagram",
  "risk_coverage.png": "Risk–coverage curve",
  "training_curves.png": "Training curves",
};

function short(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function facts(detail) {
  const manifest = detail.manifest || {};
  const predictor = detail.predictor || {};
  const mc = predictor.mc || {};
  const calibration = manifest.calibration || {};
  const rows = [
    ["Name", detail.name], ["Task", detail.task], ["State", detail.state], ["Version", detail.version],
    ["Created", manifest.created_at], ["Model class", manifest.model_class || predictor.model_class],
    ["Device / dtype", `${detail.device || "–"} / ${detail.dtype || "–"}`],
    ["Labels", (manifest.labels || []).join(", ") || null],
    ["Default T", detail.mc && detail.mc.default_samples], ["T cap", detail.mc && detail.mc.cap],
    ["MC mode", mc.mode], ["Live dropout sites", (mc.live_sites || []).join(", ") || null],
    ["Temperature τ", calibration.temperature],
    ["Abstain rule", calibration.abstain ? `${calibration.abstain.measure} > ${short(calibration.abstain.threshold)}`
      : null],
  ];
  const metrics = manifest.metrics || {};
  for (const [name, value] of Object.entries(metrics)) {
    if (typeof value === "number") rows.push([name, value]);
  }
  return el("table", { className: "facts", "data-testid": "card-facts" },
    rows.filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([name, value]) => el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: short(value) }))));
}

async function figures(name) {
  const listing = await api(`/models/${encodeURIComponent(name)}/reports`);
  const images = listing.files.filter((f) => f.media_type.startsWith("image/"));
  const others = listing.files.filter((f) => !f.media_type.startsWith("image/"));
  const grid = el("div", { className: "figures", "data-testid": "reports" });
  for (const file of images) {
    const url = `/models/${encodeURIComponent(name)}/reports/${encodeURIComponent(file.name)}`;
    const title = REPORT_TITLES[file.name] || file.name;
    const img = el("img", { alt: `${title} of ${name} ${listing.version || ""}`.trim(), loading: "lazy" });
    const figure = el("figure", {}, img, el("figcaption", { text: `${title} (${file.name})` }));
    img.addEventListener("load", () => figure.classList.toggle("wide", img.naturalWidth > 2 * img.naturalHeight));
    grid.append(figure);
    blob(url).then((data) => { img.src = URL.createObjectURL(data); })
      .catch((error) => { img.alt = `${title}: could not load (${error.message})`; });
  }
  const parts = [el("h3", { text: "Training reports" })];
  if (!listing.files.length) parts.push(el("p", { className: "muted", text: "This artifact has no reports." }));
  parts.push(grid);
  if (others.length) {
    parts.push(el("p", { className: "muted", text: `Also in reports/: ${others.map((f) => f.name).join(", ")} `
      + `(GET /models/${name}/reports/<file>).` }));
  }
  return parts;
}

/** Fill `target` with the card of model `name`; returns the detail (or null when it could not be read). */
export async function showCard(target, name) {
  target.replaceChildren(el("p", { className: "muted", text: `Loading the card of ${name}…` }));
  let detail;
  try {
    detail = await api(`/models/${encodeURIComponent(name)}`);
  } catch (error) {
    const text = error instanceof ApiError ? error.describe() : `Network error: ${error.message}`;
    target.replaceChildren(el("p", { className: "error", text }));
    return null;
  }
  target.replaceChildren(facts(detail));
  try {
    target.append(...await figures(name));
  } catch (error) {
    const text = error instanceof ApiError ? error.describe() : error.message;
    target.append(el("p", { className: "muted", text: `Reports unavailable: ${text}` }));
  }
  return detail;
}
