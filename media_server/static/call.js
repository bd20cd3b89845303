// Kuzet officer's call screen: own camera and microphone in (WHIP), the person's media out (WHEP), live
// results polled from the call's state; or, on the watch page, the person's check-in only (WHEP).
// Text comes from the page (#call-strings, translated server-side); no text lives here.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("call-config").textContent);
  const strings = {};
  for (const el of document.querySelectorAll("#call-strings [data-k]")) strings[el.dataset.k] = el.textContent;
  const $ = (id) => document.getElementById(id);
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const POLL_MS = 1000;
  const state = { publish: null, publishUrl: null, viewer: null, viewerUrl: null, stream: null, ended: false };

  function setStatus(key, phase) {
    const el = $("call-status");
    el.textContent = strings[key] || key;
    el.dataset.state = phase;
  }

  function waitIce(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async function negotiate(pc, url) {
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc);
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
      credentials: "same-origin",
    });
    if (response.status !== 201) throw new Error("HTTP " + response.status);
    const location = new URL(response.headers.get("Location"), window.location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    return location;
  }

  async function publish() {
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: { echoCancellation: true },
    });
    $("local").srcObject = state.stream;
    const pc = new RTCPeerConnection({ iceServers: config.iceServers });
    state.publish = pc;
    for (const track of state.stream.getTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [state.stream] });
    }
    state.publishUrl = await negotiate(pc, config.whipUrl);
  }

  async function watch() {
    const pc = new RTCPeerConnection({ iceServers: config.iceServers });
    state.viewer = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const remote = new MediaStream();
    pc.ontrack = (event) => {
      remote.addTrack(event.track);
      $("remote").srcObject = remote;
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && !state.ended) setStatus("failed", "error");
    };
    state.viewerUrl = await negotiate(pc, config.whepUrl);
  }

  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
  }

  function renderLive(items) {
    const list = $("live");
    list.replaceChildren();
    for (const item of items.slice().reverse()) {
      const li = document.createElement("li");
      li.dataset.face = item.face_seen ? "seen" : "none";
      li.dataset.outcome = item.outcome || "";
      let text = item.t_s.toFixed(1) + " s: " + (item.face_seen ? strings.face_seen : strings.no_face);
      if (item.outcome) text += " — " + item.outcome + " (" + item.code + ")";
      if (item.score !== null && item.threshold !== null) {
        text += " " + item.score.toFixed(3) + " / " + item.threshold.toFixed(3);
      }
      li.textContent = text;
      if (item.outcome) li.className = item.outcome;
      list.appendChild(li);
    }
  }

  function renderStored(body) {
    const table = $("checks");
    table.replaceChildren();
    for (const c of body.checks) {
      const row = table.insertRow();
      row.className = "check-row";
      row.dataset.kind = c.kind;
      cell(row, c.kind);
      cell(row, c.outcome, c.outcome);
      cell(row, c.message);
      cell(row, c.score === null || c.score === undefined ? "—" : String(c.score));
    }
    const verdict = $("verdict");
    verdict.textContent = body.verdict ? body.verdict.decision : "";
    verdict.className = body.verdict ? body.verdict.decision : "";
    verdict.dataset.decision = body.verdict ? body.verdict.decision : "";
  }

  async function poll() {
    try {
      const response = await fetch(config.stateUrl, { credentials: "same-origin" });
      if (response.ok) {
        const body = await response.json();
        renderLive(body.live);
        renderStored(body);
        if (!state.ended) setStatus(body.person_connected ? "live" : "waiting", "live");
        if (state.ended && body.verdict) return;  // the result is on screen: stop polling
      }
    } catch (err) {
      // a missed poll is retried
    }
    setTimeout(poll, POLL_MS);
  }

  function teardown() {
    for (const [url] of [[state.viewerUrl], [state.publishUrl]]) {
      if (url) fetch(url, { method: "DELETE", keepalive: true, credentials: "same-origin" }).catch(() => {});
    }
    state.viewerUrl = null;
    state.publishUrl = null;
    if (state.stream) for (const track of state.stream.getTracks()) track.stop();
    for (const pc of [state.viewer, state.publish]) if (pc) pc.close();
    state.viewer = null;
    state.publish = null;
  }

  async function start() {
    $("call-start").disabled = true;
    setStatus("connecting", "connecting");
    if (config.mode === "call") {
      try {
        await publish();
      } catch (err) {
        setStatus(err && err.name === "NotAllowedError" ? "camera" : "failed", "error");
        $("call-start").disabled = false;
        return;
      }
    }
    try {
      await watch();
    } catch (err) {
      setStatus("failed", "error");
      $("call-start").disabled = false;
      return;
    }
    setStatus(config.mode === "call" ? "waiting" : "live", "live");
    if (config.stateUrl) poll();
  }

  async function end(event) {
    event.preventDefault();
    const data = new FormData(event.target);
    const result = $("end-result");
    const button = $("call-end-button");
    button.disabled = true;
    result.textContent = strings.ending;
    result.dataset.state = "ending";
    let response;
    try {
      response = await fetch(config.endUrl, {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ decision: data.get("decision"), comment: data.get("comment") }),
      });
    } catch (err) {
      response = null;
    }
    if (response && response.ok) {
      state.ended = true;
      // The server ended the publish and the viewers with the call: nothing is left to DELETE.
      state.viewerUrl = null;
      state.publishUrl = null;
      teardown();
      result.textContent = strings.ended;
      result.dataset.state = "done";
      return;
    }
    let detail = "";
    try { detail = (await response.json()).message || ""; } catch (err) { detail = ""; }
    result.textContent = strings.end_failed + " " + detail;
    result.dataset.state = "error";
    button.disabled = false;
  }

  $("call-start").addEventListener("click", start);
  const form = $("call-end");
  if (form) form.addEventListener("submit", end);
  window.addEventListener("pagehide", teardown);
})();
