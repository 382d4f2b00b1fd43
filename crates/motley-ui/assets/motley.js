// motley's dashboard: follows an allocation's log (<pre data-log-src>) over
// server-sent events. Text only: lines are added as text nodes, never as HTML.
"use strict";
function followLogs() {
  for (const pre of document.querySelectorAll("pre[data-log-src]")) {
    if (pre.dataset.following) continue;
    pre.dataset.following = "1";
    const status = document.getElementById(pre.dataset.status);
    const say = (text) => { if (status) status.textContent = text; };
    const src = new EventSource(pre.dataset.logSrc);
    src.onopen = () => say("following");
    src.onmessage = (e) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(JSON.parse(e.data));
      // Keep the page light: at most about 256 KB of log on screen.
      if (pre.textContent.length > 262144) {
        pre.textContent = pre.textContent.slice(-131072);
      }
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    };
    src.addEventListener("end", (e) => { say(JSON.parse(e.data)); src.close(); });
    src.onerror = () => { say("disconnected: reload the page to follow again"); src.close(); };
  }
}
document.addEventListener("DOMContentLoaded", followLogs);
