"use strict";
// Each figure file calls saeatlasFigure(id, figure, layer) with Plotly JSON whose strings were escaped
// for a script context. Points that carry customdata [size, feature(, layer)] (the joint map) and
// split-forest nodes named "size:feature" open that feature's page.

function saeatlasFeatureUrl(size, id, layer) {
  return "features/feature.html?size=" + encodeURIComponent(String(size)) + "&id=" + encodeURIComponent(String(id)) +
    (layer !== null && layer !== undefined ? "&layer=" + encodeURIComponent(String(layer)) : "");
}

// Figures are queued as their files load and drawn one at a time after the page's load event:
// the text and tables are readable at once, and no single long task blocks the page.
var saeatlasQueue = [];
var saeatlasLoaded = false;

function saeatlasDrawNext() {
  var next = saeatlasQueue.shift();
  if (!next) { return; }
  saeatlasDraw(next[0], next[1], next[2]);
  setTimeout(saeatlasDrawNext, 0);
}

window.addEventListener("load", function () { saeatlasLoaded = true; setTimeout(saeatlasDrawNext, 0); });

window.saeatlasFigure = function (id, figure, layer) {
  saeatlasQueue.push([id, figure, layer]);
  if (saeatlasLoaded && saeatlasQueue.length === 1) { setTimeout(saeatlasDrawNext, 0); }
};

function saeatlasDraw(id, figure, layer) {
  var el = document.getElementById(id);
  if (!el || typeof Plotly === "undefined") { return; }
  var layout = figure.layout || {};
  layout.autosize = true;
  Plotly.newPlot(el, figure.data || [], layout, {responsive: true, displaylogo: false}).then(function () {
    el.setAttribute("data-rendered", "true");
    el.on("plotly_icicleclick", function (event) {
      var point = event && event.points && event.points[0];
      var m = point && /^(\d+):(\d+)$/.exec(String(point.id));
      if (!m) { return true; }  // the forest's root: zoom as usual
      window.location.href = saeatlasFeatureUrl(m[1], m[2], layer);
      return false;
    });
    el.on("plotly_click", function (event) {
      var point = event && event.points && event.points[0];
      var cd = point && point.customdata;
      if (!cd || cd.length < 2 || !Number.isInteger(cd[0]) || !Number.isInteger(cd[1])) { return; }
      window.location.href = saeatlasFeatureUrl(cd[0], cd[1], cd.length > 2 ? cd[2] : layer);
    });
  });
}
