// facematch reviewer page: face boxes drawn by dragging, keyboard shortcuts, ingest progress and live job list. No libraries.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const open = document.getElementById("opencase");
  if (open) open.addEventListener("submit", (e) => {
    e.preventDefault();
    location.href = "/cases/" + encodeURIComponent(document.getElementById("newcase").value.trim());
  });
  setUpBoxes();
  setUpKeys();
  setUpIngest();
  keepAnchor();
});

// The reason form of a search opened from the review queue (/searches/ID#p1-custody-3): the fragment never
// reaches the server, so it goes in a hidden field; the server checks its form and adds it to its redirect.
function keepAnchor() {
  const field = document.getElementById("consult-anchor");
  if (field && !field.value && /^#p\d+-(custody|scene)-\d+$/.test(location.hash)) field.value = location.hash.slice(1);
}

function setUpBoxes() {
  const input = document.getElementById("images");
  if (!input) return;
  const boxes = [];
  const hidden = document.getElementById("boxes");
  const save = () => { hidden.value = JSON.stringify(boxes); };
  input.addEventListener("change", () => {
    const previews = document.getElementById("previews");
    previews.textContent = "";
    boxes.length = 0;
    Array.from(input.files).forEach((file, n) => {
      boxes.push(null);
      const canvas = document.createElement("canvas");
      canvas.className = "drawbox";
      canvas.dataset.index = n;
      previews.appendChild(canvas);
      const img = new Image();
      img.onload = () => {
        const scale = Math.min(1, 480 / img.naturalWidth);
        canvas.width = Math.round(img.naturalWidth * scale);
        canvas.height = Math.round(img.naturalHeight * scale);
        const ctx = canvas.getContext("2d");
        const paint = (b) => {
          ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
          if (b) { ctx.strokeStyle = "#ff0"; ctx.lineWidth = 2; ctx.strokeRect(b[0], b[1], b[2], b[3]); }
        };
        paint(null);
        let start = null;
        const at = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
        const rect = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1])];
        canvas.addEventListener("mousedown", (e) => { start = at(e); });
        canvas.addEventListener("mousemove", (e) => { if (start) paint(rect(start, at(e))); });
        canvas.addEventListener("mouseup", (e) => {
          if (!start) return;
          const r = rect(start, at(e));
          start = null;
          if (r[2] < 4 || r[3] < 4) { boxes[n] = null; paint(null); save(); return; }
          paint(r);
          boxes[n] = r.map((v) => Math.round(v / scale));
          save();
        });
      };
      img.src = URL.createObjectURL(file);
    });
    save();
  });
}

function setUpKeys() {
  const cands = Array.from(document.querySelectorAll(".cand"));
  if (!cands.length) return;
  let current = 0;
  const focus = (i) => { current = Math.max(0, Math.min(cands.length - 1, i)); cands[current].focus(); };
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") return;
    const pick = { p: "possible match", n: "not a match", i: "inconclusive" }[e.key];
    if (e.key === "j") focus(current + 1);
    else if (e.key === "k") focus(current - 1);
    else if (pick) {
      const form = cands[current].querySelector("form.decide");
      if (!form) return;
      form.querySelector(`input[value="${pick}"]`).checked = true;
      form.querySelector(".note").focus();
      e.preventDefault();
    }
  });
}

// The job list, drawn from /api/ingest (same text as the server's list: the agency's last 50 ingests, or
// the older page the address names, recorded runs and this server's live jobs); every 2 s while shown.
function drawJobs(jobs) {
  const list = document.getElementById("jobs");
  const items = jobs.map((j) => {
    const li = document.createElement("li");
    li.id = j.id ? `job-${j.id}` : `run-${j.run_id}`;
    const what = j.collection || (j.case ? `case ${j.case}` : (j.kind === "scene" ? "crime-scene images" : "custody images"));
    li.textContent = (j.id ? `#${j.id} ` : "") + (j.run_id ? `run ${j.run_id} ` : "") +
      `${what}: ${j.state} ${j.done}/${j.total}` + (j.error ? ` (${j.error})` : "") +
      ` · started by ${j.user} ${j.started_at.replace("T", " ").replace("+00:00", " UTC")} · ${j.faces_stored} face(s) stored` +
      (j.failures === null || j.failures === undefined ? "" : ` · ${j.failures} failures`);
    return li;
  });
  if (!items.length) {
    const none = document.createElement("li");
    none.className = "none";
    none.textContent = "No jobs yet.";
    items.push(none);
  }
  list.replaceChildren(...items);
}

async function refreshJobs() {
  try {
    const before = new URLSearchParams(window.location.search).get("before");  // an older page stays that page
    const url = before ? `/api/ingest?before=${encodeURIComponent(before)}` : "/api/ingest";
    const reply = await fetch(url, { headers: { Accept: "application/json" } });
    if (reply.ok) drawJobs(await reply.json());
  } catch (err) { /* the server is away for a moment: the next round tries again */ }
}

function setUpIngest() {
  const form = document.getElementById("ingestform");
  if (!form) return;
  let timer = null;
  const schedule = () => { clearTimeout(timer); timer = setTimeout(async () => { if (!document.hidden) await refreshJobs(); schedule(); }, 2000); };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { refreshJobs(); schedule(); } });
  schedule();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const csrf = document.getElementById("csrf").value;
    const url = data.get("kind") === "scene" ? "/api/ingest/scene" : "/api/ingest";  // crime-scene images: a case
    const reply = await fetch(url, { method: "POST", body: data, headers: { "X-CSRF-Token": csrf } });
    const job = await reply.json();
    const text = document.getElementById("jobtext");
    document.getElementById("job").hidden = false;
    if (!reply.ok) { text.textContent = job.error; return; }
    refreshJobs();  // the new job is listed at once
    const poll = async () => {
      const state = await (await fetch(`/api/ingest/${job.id}`)).json();
      document.getElementById("bar").value = state.percent;
      text.textContent = `${state.state}: ${state.done} of ${state.total} images` + (state.error ? ` (${state.error})` : "");
      if (state.state === "running") setTimeout(poll, 500);
      else refreshJobs();
    };
    poll();
  });
}
