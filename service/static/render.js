// Rendering of /predict responses: classification (label, probability bars, uncertainty decomposition, OOD
// score, abstain badge) and sequences (tokens coloured by entropy or mutual information, with a legend,
// hover and keyboard focus for each token's numbers). Units: probabilities 0..1, entropies and MI in nats.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function bar(label, value, scale, unit, kind = "") {
  const share = scale > 0 ? Math.max(0, Math.min(1, value / scale)) : 0;
  const fill = el("div", { className: `fill ${kind}` });
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  const text = `${fmt(value)}${unit ? ` ${unit}` : ""}`;
  return [
    el("span", { className: "bar-label", text: label }),
    el("div", { className: "track", role: "img", "aria-label": `${label}: ${text}` }, fill),
    el("span", { className: "value", text }),
  ];
}

function badge(prediction) {
  if (prediction.abstain) {
    const reason = prediction.abstain_reason || "uncertainty above the model's abstain threshold";
    return el("span", { className: "badge abstain", "data-testid": "abstain-badge", text: `Abstains: ${reason}` });
  }
  const calm = prediction.uncertainty ? "No abstain" : "No uncertainty (T = 0)";
  return el("span", { className: "badge confident", "data-testid": "abstain-badge", text: calm });
}

/** A classification: headline, probability bars, the uncertainty chart, OOD score when the server sends one. */
export function renderClassification(prediction) {
  const labels = Object.keys(prediction.probabilities);
  const probabilities = el("div", { className: "bars", "data-testid": "probabilities" },
    labels.map((name) => bar(name, prediction.probabilities[name], 1, "")));
  const parts = [
    el("div", { className: "headline" },
      el("span", { className: "label", "data-testid": "label", text: prediction.label }),
      el("span", { text: `confidence ${fmt(prediction.confidence)}` }),
      badge(prediction)),
    el("h3", { text: "Probabilities" }), probabilities,
  ];
  const u = prediction.uncertainty;
  if (u) {
    const scale = Math.log(Math.max(2, labels.length)); // the largest possible entropy, nats
    parts.push(
      el("h3", { text: "Uncertainty (nats; total = aleatoric + epistemic)" }),
      el("div", { className: "bars", "data-testid": "uncertainty" },
        bar("Total (predictive entropy)", u.predictive_entropy, scale, "nats"),
        bar("Aleatoric (expected entropy)", u.expected_entropy, scale, "nats", "aleatoric"),
        bar("Epistemic (mutual information)", u.mutual_information, scale, "nats", "epistemic"),
        "ood_score" in prediction && prediction.ood_score !== null
          ? bar("Out-of-distribution score", prediction.ood_score, 1, "", "ood") : []),
      el("p", { className: "muted", text: `Bars scaled to ln ${labels.length} = ${fmt(scale)} nats, the most `
        + `uncertain possible answer. Variation ratio ${fmt(u.variation_ratio)}, std of p ${fmt(u.probability_std)}.` }),
    );
  }
  if (prediction.truncated) parts.push(el("p", { className: "muted", text: "The text was cut to the model's limit." }));
  return el("div", {}, parts);
}

// Token colour: pale yellow (0) to orange-red (the scale's top); #1a1a1a text stays ≥ 4.5:1 on all of them.
function colour(share) {
  const t = Math.max(0, Math.min(1, share));
  return `hsl(${(50 - 42 * t).toFixed(1)} ${(100 - 15 * t).toFixed(1)}% ${(96 - 34 * t).toFixed(1)}%)`;
}

const MEASURES = {
  entropy: { name: "entropy", floor: 0.5, label: "Entropy (total uncertainty)" },
  mutual_information: { name: "MI", floor: 0.05, label: "Mutual information (epistemic)" },
};

function tokenText(token) {
  return `“${token.token}”  p ${fmt(token.probability)} · entropy ${fmt(token.entropy)} nats · MI `
    + `${token.mutual_information === null ? "n/a (T = 0)" : `${fmt(token.mutual_information, 4)} nats`}`;
}

function paint(container, legend, tokens, measure) {
  const values = tokens.map((t) => t[measure] ?? 0);
  const top = Math.max(MEASURES[measure].floor, ...values);
  container.querySelectorAll(".token").forEach((node, i) => {
    node.style.backgroundColor = colour(values[i] / top);
  });
  legend.replaceChildren(
    el("span", { text: `${MEASURES[measure].label}:` }), el("span", { text: "0" }),
    el("span", { className: "gradient", role: "img", "aria-label": `colour scale from 0 to ${fmt(top)} nats` }),
    el("span", { text: `${fmt(top)} nats` }),
  );
}

function tooltip() {
  let tip = document.getElementById("token-tip");
  if (!tip) {
    tip = el("div", { id: "token-tip", className: "tooltip", role: "tooltip", hidden: true });
    document.body.append(tip);
  }
  return tip;
}

function showTip(node, token) {
  const tip = tooltip();
  tip.textContent = tokenText(token);
  tip.hidden = false;
  const box = node.getBoundingClientRect();
  const left = Math.max(4, Math.min(box.left, window.innerWidth - tip.offsetWidth - 4));
  const below = box.bottom + 6 + tip.offsetHeight < window.innerHeight;
  tip.style.left = `${left}px`;
  tip.style.top = `${below ? box.bottom + 6 : box.top - tip.offsetHeight - 6}px`;
}

// One tab stop for the whole output; arrow keys (and Home/End) move between tokens.
function onKey(event, nodes) {
  const index = nodes.indexOf(event.target);
  const moves = { ArrowRight: index + 1, ArrowDown: index + 1, ArrowLeft: index - 1, ArrowUp: index - 1,
                  Home: 0, End: nodes.length - 1 };
  if (index < 0 || !(event.key in moves)) return;
  event.preventDefault();
  const next = nodes[Math.max(0, Math.min(nodes.length - 1, moves[event.key]))];
  nodes[index].tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
}

function tokenOutput(tokens) {
  const nodes = tokens.map((token, i) => {
    const node = el("span", { className: "token", tabindex: i === 0 ? 0 : -1, "aria-label": tokenText(token),
                              text: token.token });
    const show = () => showTip(node, token);
    const hide = () => { tooltip().hidden = true; };
    node.addEventListener("mouseenter", show);
    node.addEventListener("focus", show);
    node.addEventListener("mouseleave", hide);
    node.addEventListener("blur", hide);
    return node;
  });
  const output = el("div", { className: "output", "data-testid": "tokens", role: "group",
                             "aria-label": "Output tokens: arrow keys move between them and show their numbers" },
    nodes);
  output.addEventListener("keydown", (event) => onKey(event, nodes));
  return output;
}

/** A translation or generation: coloured tokens (with a measure selector and legend), measures, badge. */
export function renderSequence(prediction) {
  const text = prediction.translation ?? prediction.text;
  const parts = [el("div", { className: "headline" },
    el("span", { text: `${prediction.output_tokens} tokens, finish: ${prediction.finish_reason}` }),
    badge(prediction))];
  const tokens = prediction.tokens;
  if (tokens && tokens.length) {
    const hasMI = tokens.some((t) => t.mutual_information !== null);
    const legend = el("div", { className: "legend", "data-testid": "legend" });
    const output = tokenOutput(tokens);
    const choice = el("fieldset", { className: "measure-choice" }, el("legend", { text: "Colour tokens by" }),
      Object.entries(MEASURES).map(([key, m]) => {
        const input = el("input", { type: "radio", name: "measure", id: `measure-${key}`, value: key,
                                    checked: key === "entropy", disabled: key !== "entropy" && !hasMI });
        input.addEventListener("change", () => paint(output, legend, tokens, key));
        return el("label", { for: `measure-${key}` }, input, ` ${m.label}`);
      }));
    parts.push(choice, legend, output);
    paint(output, legend, tokens, "entropy");
  } else {
    parts.push(el("div", { className: "output", text }));
  }
  const u = prediction.uncertainty;
  if (u) {
    const rows = [["TP: log-probability (deterministic)", u.sequence_log_prob, "nats"],
      ["D-TP: mean MC log-probability", u.mc_log_prob_mean, "nats"], ["D-Var: MC variance", u.mc_log_prob_var, "nats²"],
      ["Mean token entropy", u.mean_token_entropy, "nats"], ["Mean token MI", u.mean_token_mutual_information, "nats"],
      ["Max token MI", u.max_token_mutual_information, "nats"]];
    if (u.sampling_chrf !== null && u.sampling_chrf !== undefined) rows.push(["Sampling chrF", u.sampling_chrf, ""]);
    parts.push(el("h3", { text: "Sequence uncertainty" }), el("table", { className: "facts" },
      rows.map(([name, value, unit]) => el("tr", {}, el("th", { scope: "row", text: name }),
        el("td", { className: "value", text: `${fmt(value)} ${unit}` })))));
  }
  return el("div", {}, parts);
}

/** A live view for a generation while it streams: the text grows as token events arrive. */
export function streamingView() {
  const output = el("div", { className: "output", "data-testid": "streaming", "aria-busy": "true" });
  return { node: el("div", {}, el("p", { className: "muted", text: "Generating…" }), output),
           append: (text) => output.append(text) };
}
