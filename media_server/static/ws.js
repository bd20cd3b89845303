// Kuzet workstation: clicking a challenge step or a frame seeks the session recording. No text lives here.
(() => {
  "use strict";
  const video = document.querySelector("video#recording");
  const seek = (seconds) => {
    if (!video || !Number.isFinite(seconds)) return;
    const go = () => { video.currentTime = seconds; video.pause(); };
    if (video.readyState >= 1) go(); else video.addEventListener("loadedmetadata", go, { once: true });
    video.scrollIntoView({ block: "nearest" });
  };
  document.querySelectorAll("[data-seek]").forEach((el) => {
    el.addEventListener("click", (ev) => {
      if (ev.target.closest("a")) return;
      seek(parseFloat(el.dataset.seek));
      document.querySelectorAll(".timeline li.current").forEach((li) => li.classList.remove("current"));
      if (el.matches(".timeline li")) el.classList.add("current");
    });
  });
})();
