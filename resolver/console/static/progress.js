// The console's one script (resolver/console/scripts.py). Every page works without it.
// - The import form (#import-form): sends the file with XMLHttpRequest to show how much of it is
//   sent, with the same form fields (its security token included); then goes to the job's page,
//   or shows the page the node answered (a file refused, too large, ...).
// - A job's page (#job[data-poll]): asks for the job's counts every second and updates them in
//   place, until the job is done or failed.
"use strict";
(function () {
  var numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);

  function bytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1).replace(/\.0$/, "") + " MiB";
    if (n >= 1024) return (n / 1024).toFixed(1).replace(/\.0$/, "") + " KiB";
    return n + " B";
  }

  function showPage(html) {
    // The node's answer to the form (an error page of the import form): shown as if it had been loaded.
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.title = doc.title;
    document.body.replaceWith(document.adoptNode(doc.body));
    start();
  }

  function upload(form) {
    var box = document.getElementById("upload");
    var bar = document.getElementById("upload-progress");
    var text = document.getElementById("upload-text");
    var button = form.querySelector("button[type=submit]");
    if (!box || !bar || !text || !window.FormData) return;
    form.addEventListener("submit", function (event) {
      if (!form.checkValidity()) return;
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        var percent = Math.floor((e.loaded * 100) / e.total);
        bar.value = percent;
        box.dataset.percent = String(percent);
        text.textContent = box.dataset.sent.replace("{done}", bytes(e.loaded)).replace("{size}", bytes(e.total));
      });
      xhr.upload.addEventListener("load", function () {
        bar.value = 100;
        box.dataset.percent = "100";
        text.textContent = box.dataset.wait;
      });
      xhr.addEventListener("load", function () {
        if (xhr.status === 200 && new URL(xhr.responseURL).pathname.indexOf("/console/jobs/") === 0) {
          window.location.assign(xhr.responseURL);
        } else {
          showPage(xhr.responseText);
        }
      });
      xhr.addEventListener("error", function () {
        text.textContent = box.dataset.failed;
        button.disabled = false;
      });
      box.hidden = false;
      button.disabled = true;
      xhr.send(new FormData(form));
    });
  }

  function follow(section) {
    var url = section.dataset.poll;
    var every = Number(section.dataset.pollMs) || 1000;
    var live = document.getElementById("live");
    if (live) live.hidden = false;

    function show(job) {
      ["total", "processed", "created", "present", "rejected"].forEach(function (key) {
        var cell = document.getElementById(key);
        if (cell && job[key] !== null && job[key] !== undefined) cell.textContent = numbers.format(job[key]);
      });
      var bar = document.getElementById("progress");
      if (bar) {
        bar.value = job.percent;
        bar.textContent = job.percent + "%";
      }
      var percent = document.getElementById("percent");
      if (percent) percent.textContent = job.percent + "%";
      var badge = section.querySelector(".badge");
      if (badge && badge.dataset.state !== job.state) {
        badge.dataset.state = job.state;
        badge.textContent = job.state_label;
        badge.className = "badge " + (job.state === "done" ? "ok" : job.state === "failed" ? "disabled" : "later");
      }
      section.dataset.state = job.state;
    }

    function ask() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          var type = r.headers.get("Content-Type") || "";
          if (!r.ok || type.indexOf("application/json") !== 0) throw new Error("not the job's counts");
          return r.json();
        })
        .then(function (job) {
          show(job);
          if (job.state === "done" || job.state === "failed") {
            if (live) live.hidden = true;
            // The rejected rows and the error are parts of the page the node writes: load it once.
            if (job.rejected > 0 || job.error) window.location.reload();
            return;
          }
          window.setTimeout(ask, every);
        })
        .catch(function () {
          // Signed out, the job gone, the node away: the page itself says which.
          window.setTimeout(function () { window.location.reload(); }, every * 2);
        });
    }
    window.setTimeout(ask, every);
  }

  function start() {
    var form = document.getElementById("import-form");
    if (form) upload(form);
    var section = document.querySelector("#job[data-poll]");
    if (section) follow(section);
  }

  start();
})();
