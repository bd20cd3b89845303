// Kuzet phone check-in: camera + microphone + location over WebRTC (WHIP, non-trickle).
// Strings come from the page's JSON config (built from media_server/locale catalogs); no text lives here.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("kuzet-config").textContent);
  const strings = config.strings;
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const LOCATION_TIMEOUT_MS = 10000;
  const BUSY_DEFAULT_WAIT_S = 5;
  const BUSY_MAX_WAIT_S = 60;
  const BUSY_GIVE_UP_MS = 15 * 60 * 1000;
  const state = {
    lang: config.language, pc: null, stream: null, channel: null, resource: null,
    location: null, locationSent: false, statusKey: null, statusError: false,
    promptKey: null, digits: "", feedbackCode: null, outcomeKey: null, finished: false,
  };
  const $ = (id) => document.getElementById(id);
  const t = (key) => (strings[state.lang] && strings[state.lang][key]) || strings.en[key] || key;

  function render() {
    document.documentElement.lang = state.lang;
    document.title = t("title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const b of document.querySelectorAll("button[data-lang]")) {
      b.classList.toggle("active", b.dataset.lang === state.lang);
    }
    $("prompt").textContent = state.promptKey ? t(state.promptKey) : "";
    $("digits").textContent = state.digits;
    const fb = $("feedback");
    fb.textContent = state.feedbackCode && state.feedbackCode !== "ok" ? t("feedback." + state.feedbackCode) : "";
    fb.dataset.code = state.feedbackCode || "";
    $("outcome").textContent = state.outcomeKey ? t(state.outcomeKey) : "";
    const status = $("status");
    status.textContent = state.statusKey ? t(state.statusKey) : "";
  }

  function setStatus(key, phase) {
    state.statusKey = key;
    $("status").dataset.state = phase;
    document.body.dataset.phase = phase;
    render();
  }

  function fail(key) {
    state.finished = true;
    setStatus(key, "error");
    teardown(true);
  }

  function requestLocation() {
    // Never rejects: a refusal is recorded and the check-in continues.
    return new Promise((resolve) => {
      if (!navigator.geolocation) { resolve({ denied: "unsupported" }); return; }
      navigator.geolocation.getCurrentPosition(
        (pos) => resolve({
          lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy_m: pos.coords.accuracy,
        }),
        (err) => resolve({ denied: err.code === 1 ? "permission_denied" : err.code === 3 ? "timeout" : "unavailable" }),
        { enableHighAccuracy: true, timeout: LOCATION_TIMEOUT_MS, maximumAge: 60000 },
      );
    });
  }

  function send(message) {
    const ch = state.channel;
    if (ch && ch.readyState === "open") { ch.send(JSON.stringify(message)); return true; }
    return false;
  }

  function sendLocation() {
    const loc = state.location;
    if (!loc || state.locationSent) return;
    const message = loc.denied
      ? { type: "location_denied", reason: loc.denied }
      : { type: "location", lat: loc.lat, lon: loc.lon, accuracy_m: loc.accuracy_m };
    state.locationSent = send(message);
  }

  function waitIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  function outcomeKey(message) {
    if (message.retake) return "outcome.retake";
    if (["pass", "fail", "review"].includes(message.decision)) return "outcome." + message.decision;
    if (message.status === "error") return "outcome.error";
    return "outcome.review";
  }

  function onMessage(event) {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    if (message.type === "prompt") {
      state.promptKey = "prompt." + message.text_key;
      state.digits = message.digits || "";
      send({ type: "ack", step: message.step, index: message.index });
      render();
    } else if (message.type === "feedback") {
      state.feedbackCode = message.code;
      render();
    } else if (message.type === "status" && message.state === "processing") {
      state.promptKey = "prompt.done";
      state.digits = "";
      state.feedbackCode = null;
      setStatus("status.processing", "processing");
    } else if (message.type === "outcome") {
      state.outcomeKey = outcomeKey(message);
      $("result").hidden = false;
      state.finished = true;
      teardown(false);
      setStatus("status.done", "done");
    }
  }

  function teardown(keepalive) {
    if (state.stream) for (const track of state.stream.getTracks()) track.stop();
    if (state.resource) {
      const url = state.resource;
      state.resource = null;
      fetch(url, {
        method: "DELETE",
        keepalive,
        headers: { Authorization: "Bearer " + config.token },
      }).catch(() => {});
    }
    if (state.pc) { state.pc.close(); state.pc = null; }
  }

  function postOffer(sdp) {
    return fetch(config.whipUrl, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + config.token },
      body: sdp,
    });
  }

  function retryAfterMs(response) {
    const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    const bounded = Number.isFinite(seconds) ? Math.min(Math.max(seconds, 1), BUSY_MAX_WAIT_S) : BUSY_DEFAULT_WAIT_S;
    return bounded * 1000;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function start() {
    if (!navigator.mediaDevices || !window.RTCPeerConnection) { fail("error.unsupported"); return; }
    $("start").disabled = true;
    setStatus("status.permissions", "permissions");
    const locationPromise = requestLocation();
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
        audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      });
    } catch (err) {
      fail("error.camera");
      return;
    }
    $("intro").hidden = true;
    $("live").hidden = false;
    $("preview").srcObject = state.stream;
    setStatus("status.connecting", "connecting");

    const pc = new RTCPeerConnection({ iceServers: config.iceServers });
    state.pc = pc;
    for (const track of state.stream.getTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [state.stream] });
    }
    const channel = pc.createDataChannel("kuzet");
    state.channel = channel;
    channel.onopen = sendLocation;
    channel.onmessage = onMessage;
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && !state.finished) fail("error.network");
    };
    locationPromise.then((loc) => {
      state.location = loc;
      if (loc.denied && !state.finished) {
        $("feedback").textContent = t("status.location_denied");
      }
      sendLocation();
    });

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitIceGathering(pc);
      let response = await postOffer(pc.localDescription.sdp);
      // A busy node refuses before the link is spent (503 + Retry-After): say so and offer again.
      const busySince = Date.now();
      while (response.status === 503 && !state.finished && Date.now() - busySince < BUSY_GIVE_UP_MS) {
        setStatus("status.busy", "busy");
        await sleep(retryAfterMs(response));
        if (state.finished) return;
        response = await postOffer(pc.localDescription.sdp);
      }
      if (state.finished) return;
      setStatus("status.connecting", "connecting");
      if (response.status === 401 || response.status === 403) { fail("error.link"); return; }
      if (response.status !== 201) { fail("error.network"); return; }
      state.resource = new URL(response.headers.get("Location"), window.location.href).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    } catch (err) {
      fail("error.network");
      return;
    }
    // Until the first prompt arrives the server records a baseline: ask for a straight look.
    if (!state.promptKey) state.promptKey = "prompt.look_straight";
    setStatus("status.live", "live");
  }

  for (const button of document.querySelectorAll("button[data-lang]")) {
    button.addEventListener("click", () => {
      state.lang = button.dataset.lang;
      const url = new URL(window.location.href);
      url.searchParams.set("lang", state.lang);
      window.history.replaceState(null, "", url);
      render();
    });
  }
  $("start").addEventListener("click", start);
  window.addEventListener("pagehide", () => { if (!state.finished) teardown(true); });
  render();
})();
