// The playground: pick a model (GET /models), send a text with T and a seed (POST /predict, or
// POST /predict/stream for a model that streams), show the answer and its uncertainty, and the model card.
// Errors (401, 422, 429, 503, 504, network) are shown as they are; the form keeps what the user typed.

import { ApiError, api, setApiKey, stream } from "./api.js";
import { showCard } from "./card.js";
import { el, renderClassification, renderSequence, streamingView } from "./render.js";

const $ = (id) => document.getElementById(id);
const details = new Map(); // model name → GET /models/{name}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof ApiError ? error.describe() : `Network error: ${error.message}`;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function loadModels() {
  clearError();
  setStatus("Loading models…");
  const select = $("model");
  const previous = select.value;
  let listing;
  try {
    listing = await api("/models");
  } catch (error) {
    select.replaceChildren();
    setStatus("");
    showError(error);
    return;
  }
  select.replaceChildren(...listing.models.map((m) => el("option", {
    value: m.name, disabled: m.state !== "ready",
    text: m.state === "ready" ? `${m.name} (${m.task})` : `${m.name} (${m.task}, ${m.state})`,
  })));
  const ready = listing.models.filter((m) => m.state === "ready");
  if (!ready.length) {
    setStatus("No model is ready yet; reload the page in a moment.");
    return;
  }
  select.value = ready.some((m) => m.name === previous) ? previous : ready[0].name;
  setStatus(`${ready.length} model${ready.length > 1 ? "s" : ""} ready.`);
  await selectModel();
}

function kindOf(detail) {
  const labels = detail && detail.manifest && detail.manifest.labels;
  return labels && labels.length ? "classification" : "sequence";
}

function streams(detail) {
  return Boolean(detail && detail.predictor && detail.predictor.decoding && detail.predictor.decoding.streaming);
}

async function selectModel() {
  const name = $("model").value;
  if (!name) return;
  const detail = await showCard($("card"), name);
  if (!detail) return;
  details.set(name, detail);
  const decoding = (detail.predictor && detail.predictor.decoding) || null;
  for (const node of document.querySelectorAll(".gen-only")) node.hidden = !streams(detail);
  const mc = $("mc-samples");
  if (detail.mc && Number.isInteger(detail.mc.cap)) mc.max = detail.mc.cap;
  if (detail.mc && Number.isInteger(detail.mc.default_samples)) mc.value = detail.mc.default_samples;
  if (decoding && decoding.max_new_tokens_cap) {
    const field = $("max-new-tokens");
    field.max = decoding.max_new_tokens_cap;
    field.value = Math.min(Number(field.value) || decoding.default_max_new_tokens, decoding.max_new_tokens_cap);
  }
}

function integer(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function requestBody(name, detail) {
  // By name: a task can have several models (issue 14); the model's name picks exactly the one shown.
  const body = { model: name, text: $("text").value, mc_samples: integer("mc-samples") };
  const seed = integer("seed");
  if (seed !== undefined) body.seed = seed;
  if (kindOf(detail) === "sequence") {
    body.parameters = { return_tokens: true };
    if (streams(detail)) {
      body.parameters.max_new_tokens = integer("max-new-tokens");
      body.parameters.temperature = Number($("temperature").value);
    }
  }
  return body;
}

function showResult(response) {
  const prediction = response.predictions[0];
  const view = "label" in prediction ? renderClassification(prediction) : renderSequence(prediction);
  const reuse = el("button", { type: "button", text: "Reuse this seed" });
  reuse.addEventListener("click", () => { $("seed").value = response.seed; $("seed").focus(); });
  const meta = el("div", { className: "meta muted", "data-testid": "meta" },
    el("span", { text: `${response.model.name} ${response.model.version} · T = ${response.mc_samples} · `
      + `seed ${response.seed}` }), reuse);
  $("result").replaceChildren(el("div", { "data-testid": "result", "data-task": response.task }, meta, view));
}

async function predict(event) {
  event.preventDefault();
  clearError();
  const name = $("model").value;
  if (!name) {
    showError(new Error("no model is selected (none is ready, or the API key is missing)"));
    return;
  }
  if (!$("text").value.trim()) {
    showError(new Error("type or paste a text first"));
    $("text").focus();
    return;
  }
  const detail = details.get(name);
  const body = requestBody(name, detail);
  const button = $("submit");
  button.disabled = true;
  setStatus(`Asking ${name}…`);
  const started = performance.now();
  try {
    let response;
    if (streams(detail)) {
      const live = streamingView();
      $("result").replaceChildren(live.node);
      response = await stream(body, live.append);
    } else {
      response = await api("/predict", body);
    }
    showResult(response);
    setStatus(`Answered in ${((performance.now() - started) / 1000).toFixed(2)} s.`);
  } catch (error) {
    setStatus("");
    showError(error); // the form keeps the text, T and seed: fix or retry
  } finally {
    button.disabled = false;
  }
}

function start() {
  $("predict-form").addEventListener("submit", predict);
  $("model").addEventListener("change", selectModel);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("api-key").value);
    loadModels();
  });
  loadModels();
}

start();
