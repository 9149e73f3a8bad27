"use strict";
// Each figure file calls saeatlasFigure(id, figure) with Plotly JSON whose strings were escaped
// for a script context. Points that carry customdata [size, feature(, layer)] open that feature's page.
window.saeatlasFigure = function (id, figure) {
  var el = document.getElementById(id);
  if (!el || typeof Plotly === "undefined") { return; }
  var layout = figure.layout || {};
  layout.autosize = true;
  Plotly.newPlot(el, figure.data || [], layout, {responsive: true, displaylogo: false}).then(function () {
    el.setAttribute("data-rendered", "true");
    el.on("plotly_click", function (event) {
      var point = event && event.points && event.points[0];
      var cd = point && point.customdata;
      if (!cd || cd.length < 2) { return; }
      window.location.href = "features/feature.html?size=" + encodeURIComponent(String(cd[0])) +
        "&id=" + encodeURIComponent(String(cd[1])) +
        (cd.length > 2 ? "&layer=" + encodeURIComponent(String(cd[2])) : "");
    });
  });
};
