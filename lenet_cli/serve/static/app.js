// lenet serve's page: draw (pointer events: mouse, pen, touch) or upload a digit, show what the model says.
// No framework and no build step; every request goes to this same server (the page's CSP allows nothing else).
"use strict";

const DEBOUNCE_MS = 250;  // after a stroke ends: quick enough to feel live, no request per pixel drawn
const PEN_WIDTH = 18;     // on the 280 px pad: about MNIST's stroke-to-size ratio

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const $ = (id) => document.getElementById(id);
let drawing = false, inked = false, timer = null, pending = null, last = null;

function clearPad() {
  ctx.fillStyle = "#000";  // opaque black: the PNG sent is bright ink on black, as in MNIST
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * (pad.width / r.width), y: (ev.clientY - r.top) * (pad.height / r.height) };
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = PEN_WIDTH;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  inked = true;
}

pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  pad.setPointerCapture(ev.pointerId);
  drawing = true;
  last = point(ev);
  stroke(last, last);  // a dot is a stroke too
  clearTimeout(timer);
});
pad.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const p = point(ev);
  stroke(last, p);
  last = p;
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  clearTimeout(timer);
  timer = setTimeout(sendPad, DEBOUNCE_MS);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

let clears = 0;  // Clear counts up: a drawing encoded before it is not sent after it

function sendPad() {
  if (!inked) return;
  const at = clears;
  pad.toBlob((blob) => { if (at === clears) predict(blob, blob.type || "image/png"); }, "image/png");
}

async function predict(body, contentType) {
  const seq = Symbol("request");
  pending = seq;  // only the answer to the latest request is shown
  $("error").textContent = "";
  const init = { method: "POST", body };
  if (!(body instanceof FormData)) init.headers = { "Content-Type": contentType };  // a form sets its own boundary
  try {
    const res = await fetch("/api/predict?preview=1&top_k=10", init);
    const data = await res.json().catch(() => ({}));  // a proxy's or an overloaded server's answer may be text
    if (pending !== seq) return;
    if (!res.ok) return showError(data.error || (res.status + " " + res.statusText), data.error_kind);
    show(data);
  } catch (err) {
    if (pending === seq) showError("the server did not answer (" + err.message + ")");
  }
}

function show(row) {
  $("prediction").textContent = String(row.prediction);
  $("confidence").textContent = (100 * row.confidence).toFixed(1) + "% confident";
  $("preview").src = row.preview || "";
  const notes = [].concat(row.notes || []);  // a list, or one string
  if (row.passthrough) notes.push("already in MNIST form: used unchanged");
  else if (row.inverted) notes.push("dark ink on light paper: inverted");
  $("notes").replaceChildren(...notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  const probs = new Array(10).fill(0);
  for (const t of row.top_k) probs[t.class] = t.probability;
  renderBars(probs, row.prediction);
}

function showError(message, kind) {
  $("prediction").textContent = "–";
  $("confidence").textContent = "";
  $("preview").removeAttribute("src");
  $("notes").replaceChildren();
  $("error").textContent = "Error: " + message + (kind ? " (" + kind + ")" : "");
  renderBars(new Array(10).fill(0), -1);
}

function renderBars(probs, top) {
  const items = probs.map((p, digit) => {
    const li = document.createElement("li");
    li.className = digit === top ? "top" : "";
    const pct = (100 * p).toFixed(1) + "%";
    li.setAttribute("aria-label", "digit " + digit + ": " + pct);
    const label = Object.assign(document.createElement("span"), { textContent: String(digit) });
    const track = Object.assign(document.createElement("span"), { className: "track" });
    const fill = Object.assign(document.createElement("span"), { className: "fill" });
    fill.style.width = pct;
    fill.style.display = "block";
    track.appendChild(fill);
    const value = Object.assign(document.createElement("span"), { className: "pct", textContent: pct });
    li.append(label, track, value);
    return li;
  });
  $("bars").replaceChildren(...items);
}

function upload(file) {
  if (!file) return;
  clearPad();
  const form = new FormData();
  form.append("file", file, file.name);
  predict(form);
}

$("clear").addEventListener("click", () => {
  clearPad();
  clears += 1;
  pending = null;
  $("prediction").textContent = "–";
  $("confidence").textContent = "";
  $("preview").removeAttribute("src");
  $("notes").replaceChildren();
  $("error").textContent = "";
  renderBars(new Array(10).fill(0), -1);
  pad.focus();
});
$("file").addEventListener("change", (ev) => { upload(ev.target.files[0]); ev.target.value = ""; });
// On the body only: a drop on the pad reaches it too, and one listener sends each file once.
document.body.addEventListener("dragover", (ev) => { ev.preventDefault(); pad.classList.add("dragging"); });
document.body.addEventListener("dragleave", () => pad.classList.remove("dragging"));
document.body.addEventListener("drop", (ev) => {
  ev.preventDefault();
  pad.classList.remove("dragging");
  upload(ev.dataTransfer.files[0]);
});

fetch("/api/model").then((r) => r.json()).then((m) => {
  const acc = typeof m.test_accuracy === "number" ? ", " + (100 * m.test_accuracy).toFixed(2) + "% on MNIST's test set" : "";
  $("model-line").textContent = "LeNet-5 (" + (m.preset || "?") + ") " + m.name + acc + ", in onnxruntime on this machine.";
}).catch(() => {});

clearPad();
renderBars(new Array(10).fill(0), -1);
