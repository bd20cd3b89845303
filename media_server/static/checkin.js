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
    watchId: null, lastReportMs: 0, pendingFix: null, viewer: null, viewerResource: null,
  };
  const $ = (id) => document.getElementById(id);
  const t = (key) => (strings[state.lang] && strings[state.lang][key]) || strings.en[key] || key;

  if (config.call) {
    // The same page is the person's side of an officer's call: its own title and intro.
    for (const el of document.querySelectorAll('[data-i18n="title"]')) el.dataset.i18n = "call.title";
    for (const el of document.querySelectorAll('[data-i18n="intro"]')) el.dataset.i18n = "call.intro";
  }

  function render() {
    document.documentElement.lang = state.lang;
    document.title = t(config.call ? "call.title" : "title");
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

  // Positions while the page is open: the first fix at once, then one every positionEveryS, to the
  // location API with the link as the bearer. A refusal or a failing GPS only stops the reports.
  function postFix(fix) {
    state.lastReportMs = Date.now();
    fetch(config.positionsUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + config.token },
      body: JSON.stringify({ fixes: [fix] }),
      keepalive: true,
    }).catch(() => {});
  }

  function watchPosition() {
    if (!config.positionsUrl || !navigator.geolocation || state.watchId !== null) return;
    const everyMs = (config.positionEveryS || 30) * 1000;
    state.watchId = navigator.geolocation.watchPosition(
      (pos) => {
        const fix = {
          t_ms: Math.round(pos.timestamp), lat: pos.coords.latitude, lon: pos.coords.longitude,
          accuracy_m: pos.coords.accuracy,
        };
        if (Date.now() - state.lastReportMs >= everyMs) postFix(fix); else state.pendingFix = fix;
      },
      (err) => {
        if (err.code === 1) stopPositions();  // permission denied: nothing more is asked or sent
      },
      { enableHighAccuracy: true, maximumAge: 10000 },
    );
    state.reportTimer = setInterval(() => {
      if (state.pendingFix && Date.now() - state.lastReportMs >= everyMs) {
        postFix(state.pendingFix);
        state.pendingFix = null;
      }
    }, 1000);
  }

  function stopPositions() {
    if (state.watchId !== null && navigator.geolocation) navigator.geolocation.clearWatch(state.watchId);
    state.watchId = null;
    if (state.reportTimer) clearInterval(state.reportTimer);
    state.reportTimer = null;
  }

  // The officer's audio and video in a call (WHEP: a receive-only offer; the answer relays the officer).
  async function watchOfficer() {
    if (!config.whepUrl) return;
    const pc = new RTCPeerConnection({ iceServers: config.iceServers });
    state.viewer = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const remote = new MediaStream();
    pc.ontrack = (event) => {
      remote.addTrack(event.track);
      const video = $("remote");
      video.srcObject = remote;
      $("remote-box").hidden = false;
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitIceGathering(pc);
      const response = await fetch(config.whepUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + config.token },
        body: pc.localDescription.sdp,
      });
      if (response.status !== 201) return;  // the call goes on without the officer's picture
      state.viewerResource = new URL(response.headers.get("Location"), window.location.href).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    } catch (err) {
      // Not seeing the officer does not stop the check.
    }
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
    if (config.call && !message.retake && message.status !== "error") return "call.ended";
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
      state.viewerResource = null;  // the server ends a call's viewers with the call
      teardown(false);
      setStatus("status.done", "done");
    }
  }

  function teardown(keepalive) {
    if (state.stream) for (const track of state.stream.getTracks()) track.stop();
    if (state.viewerResource) {
      fetch(state.viewerResource, {
        method: "DELETE", keepalive, headers: { Authorization: "Bearer " + config.token },
      }).catch(() => {});
      state.viewerResource = null;
    }
    if (state.viewer) { state.viewer.close(); state.viewer = null; }
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
    locationPromise.then((loc) => { if (!loc.denied) watchPosition(); });
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
    setStatus(config.call ? "call.live" : "status.live", "live");
    watchOfficer();
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
  window.addEventListener("pagehide", () => {
    stopPositions();
    if (!state.finished) teardown(true);
  });
  render();
})();
