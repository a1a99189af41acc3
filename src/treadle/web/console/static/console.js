// Copy buttons: shown only where script runs (the text stays selectable without it).
(function () {
  "use strict";
  function announce(text) {
    var status = document.getElementById("copy-status");
    if (status) { status.textContent = text; }
  }
  function copied(button) {
    var label = button.textContent;
    button.textContent = "Copied";
    announce("Copied to the clipboard.");
    setTimeout(function () { button.textContent = label; }, 2000);
  }
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = source.value;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { copied(button); }, function () {
          source.select(); announce("Press Ctrl+C (or Cmd+C) to copy.");
        });
      } else {
        // Plain HTTP on another host: no Clipboard API; the selection is copied instead.
        source.select();
        if (document.execCommand("copy")) { copied(button); } else { announce("Press Ctrl+C (or Cmd+C) to copy."); }
      }
    });
  });
})();
