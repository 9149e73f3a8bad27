"use strict";
// The feature browser's two pages (index.html and feature.html), opened from disk.
//
// Data arrive as .js files calling the saeatlas* callbacks below (file:// forbids fetch()).
// Corpus text is untrusted: every string goes into the page through textContent, title or
// createElement, never innerHTML; invisible and direction-changing characters are shown as
// visible labels so that what a reader sees is what the corpus holds.

var SA = {vocab: null, index: null, chunks: {}, search: {}};
window.saeatlasVocab = function (v) { SA.vocab = v; };
window.saeatlasSizes = function (s) { SA.index = s; };
window.saeatlasChunk = function (layer, size, c, records) { SA.chunks[layer + "/" + size + "/" + c] = records; };
window.saeatlasSearch = function (layer, size, entries) { SA.search[layer + "/" + size] = entries; };

// ---------------------------------------------------------------- small DOM helpers

function el(tag, props, children) {
  var e = document.createElement(tag);
  var key;
  props = props || {};
  for (key in props) {
    if (!Object.prototype.hasOwnProperty.call(props, key)) { continue; }
    if (key === "text") { e.textContent = props[key]; }
    else if (key === "class") { e.className = props[key]; }
    else if (key === "title") { e.title = props[key]; }
    else { e.setAttribute(key, props[key]); }
  }
  (children || []).forEach(function (c) { e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
  return e;
}

function fmt(x, digits) {
  if (x === null || x === undefined) { return "n/a"; }
  if (Number.isInteger(x) && Math.abs(x) >= 1000) { return x.toLocaleString("en-US"); }
  if (Number.isInteger(x)) { return String(x); }
  // Trailing zeros of the fraction only ("2.50" -> "2.5", "1.00e-5" -> "1e-5"; "100" stays).
  return Number(x).toPrecision(digits || 3).replace(/(\.\d*?)0+(?=e|$)/, "$1").replace(/\.(?=e|$)/, "");
}

function loadScript(src) {
  return new Promise(function (resolve, reject) {
    var s = document.createElement("script");
    s.src = src;
    s.onload = function () { resolve(); };
    s.onerror = function () { reject(new Error("could not load " + src)); };
    document.body.appendChild(s);
  });
}

function featureHref(layer, size, id) {
  return "feature.html?size=" + encodeURIComponent(size) + "&id=" + encodeURIComponent(id) +
    "&layer=" + encodeURIComponent(layer);
}

function featureLink(layer, size, id, label) {
  var multi = SA.index && SA.index.layers.length > 1;
  return el("a", {href: featureHref(layer, size, id), class: "flink", "data-size": String(size),
                  "data-id": String(id), "data-layer": String(layer),
                  text: label || ((multi ? "L" + layer + " " : "") + "n=" + size + " #" + id)});
}

function setState(state, message) {
  document.body.setAttribute("data-state", state);
  if (message) {
    var status = document.getElementById("status") || el("p", {id: "status"});
    status.textContent = message;
    if (!status.parentNode) { document.querySelector("main").prepend(status); }
  }
}

// ---------------------------------------------------------------- text as the corpus holds it

// Format characters (bidi controls, zero-width, soft hyphen, tags), line/paragraph separators and
// private-use characters: invisible or layout-changing, so shown by code point.
var INVISIBLE = /[\p{Cf}\p{Zl}\p{Zp}\p{Co}]/u;

function hex(code) { return "U+" + code.toString(16).toUpperCase().padStart(4, "0"); }

// Named labels rather than the Control Pictures block: few fonts draw U+2400.., and a box tells
// the reader nothing.
var C0 = ["NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "TAB", "LF", "VT", "FF", "CR", "SO", "SI",
          "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"];

// Control, invisible and bidi characters as visible stand-ins; everything else unchanged.
function visible(text) {
  var out = "";
  for (var ch of text) {
    var c = ch.codePointAt(0);
    if (ch === "\n") { out += "\u21B5"; }
    else if (ch === "\t") { out += "\u2192"; }
    else if (c < 32) { out += "[" + C0[c] + "]"; }
    else if (c === 127) { out += "[DEL]"; }
    else if ((c >= 0x80 && c < 0xA0) || INVISIBLE.test(ch)) { out += "[" + hex(c) + "]"; }
    else { out += ch; }
  }
  return out;
}

function tokenBytes(id) {
  var s = (SA.vocab && SA.vocab[id]) || "";
  var b = new Uint8Array(s.length);
  for (var i = 0; i < s.length; i++) { b[i] = s.charCodeAt(i) & 255; }
  return b;
}

// The text of each token of a window: the bytes decoded as one stream, each character given to
// the token that completes it (a character split over tokens is not shown as U+FFFD twice).
function decodeTokens(ids) {
  var dec = new TextDecoder("utf-8", {ignoreBOM: true});
  var out = ids.map(function (id) { return dec.decode(tokenBytes(id), {stream: true}); });
  if (out.length) { out[out.length - 1] += dec.decode(); }
  return out;
}

function tokenText(id) {
  return new TextDecoder("utf-8", {ignoreBOM: true}).decode(tokenBytes(id));
}

// ---------------------------------------------------------------- index page

function sizeRows() {
  var rows = [];
  (SA.index.layers || []).forEach(function (layer) {
    layer.sizes.forEach(function (s) { rows.push({layer: layer.layer, size: s}); });
  });
  return rows;
}

function renderIndex() {
  var multi = SA.index.layers.length > 1;
  var table = el("table", {class: "data", id: "sizes-table"});
  table.appendChild(el("tr", {}, ["layer", "size", "features", "alive", "open"].map(function (h) {
    return el("th", {text: h});
  })));
  var select = document.getElementById("goto-size");
  sizeRows().forEach(function (r) {
    table.appendChild(el("tr", {}, [
      el("td", {text: String(r.layer)}), el("td", {class: "num", text: String(r.size.size)}),
      el("td", {class: "num", text: fmt(r.size.n)}), el("td", {class: "num", text: fmt(r.size.alive)}),
      el("td", {}, [featureLink(r.layer, r.size.size, r.size.busiest, "most frequent feature (#" + r.size.busiest + ")"),
                    " · ", featureLink(r.layer, r.size.size, 0, "#0")])]));
    select.appendChild(el("option", {value: String(r.size.size), "data-layer": String(r.layer),
                                     text: (multi ? "layer " + r.layer + " " : "") + "n=" + r.size.size}));
  });
  document.getElementById("sizes").appendChild(table);
  var layerInput = document.getElementById("goto-layer");
  function syncLayer() {
    var opt = select.options[select.selectedIndex];
    layerInput.value = opt ? opt.getAttribute("data-layer") : "";
  }
  select.addEventListener("change", syncLayer);
  syncLayer();
  var q = new URLSearchParams(window.location.search).get("q");
  if (q) {
    document.getElementById("search-box").value = q;
    return runSearch(q);
  }
  return Promise.resolve();
}

function searchEntries(rows) {
  return rows.reduce(function (p, r) {
    var key = r.layer + "/" + r.size.size;
    return p.then(function () {
      return SA.search[key] ? null : loadScript("data/layer" + r.layer + "/n" + r.size.size + "/search.js");
    });
  }, Promise.resolve());
}

var SEARCH_LIMIT = 200;

// Ranks: a token equal to the query 1; a token containing it 2; the context text 3 (id matches
// are listed before all of them).
function matchRank(entry, lower) {
  var tokens = entry[2];
  var i;
  for (i = 0; i < tokens.length; i++) { if (tokens[i].trim().toLowerCase() === lower) { return 1; } }
  for (i = 0; i < tokens.length; i++) { if (tokens[i].toLowerCase().indexOf(lower) >= 0) { return 2; } }
  if (entry[3].toLowerCase().indexOf(lower) >= 0) { return 3; }
  return -1;
}

function runSearch(q) {
  var rows = sizeRows();
  var idMatch = /^\s*(?:(\d+)\s*[:\/]\s*)?#?(\d+)\s*$/.exec(q);
  var title = document.getElementById("results-title");
  var list = document.getElementById("results-list");
  document.getElementById("results").hidden = false;
  list.textContent = "";
  title.textContent = "Searching\u2026";
  // "512:17" or "17": that id (in that size, or in every size), listed first; a number is also
  // searched as text ("1999" may be a token).
  var byId = [];
  if (idMatch) {
    var size = idMatch[1] ? Number(idMatch[1]) : null;
    var id = Number(idMatch[2]);
    byId = rows.filter(function (r) { return id < r.size.n && (size === null || r.size.size === size); });
    byId.forEach(function (r) { list.appendChild(el("li", {class: "id-hit"}, [featureLink(r.layer, r.size.size, id)])); });
    if (idMatch[1]) {
      title.textContent = byId.length + " feature(s) with id " + id + " in n=" + size;
      return Promise.resolve();
    }
  }
  var lower = q.trim().toLowerCase();
  return searchEntries(rows).then(function () {
    var hits = [];
    rows.forEach(function (r) {
      (SA.search[r.layer + "/" + r.size.size] || []).forEach(function (entry) {
        var rank = matchRank(entry, lower);
        if (rank > 0) { hits.push({rank: rank, layer: r.layer, size: r.size.size, entry: entry}); }
      });
    });
    hits.sort(function (a, b) { return a.rank - b.rank || b.entry[1] - a.entry[1] || a.size - b.size; });
    title.textContent = (byId.length ? byId.length + " feature(s) with that id; " : "") + hits.length +
      " feature(s) match \u201C" + visible(q) + "\u201D" +
      (hits.length > SEARCH_LIMIT ? " (first " + SEARCH_LIMIT + " shown)" : "");
    hits.slice(0, SEARCH_LIMIT).forEach(function (h) {
      var tokens = h.entry[2].slice(0, 8).map(function (t) { return "\u2039" + visible(t) + "\u203A"; }).join(" ");
      var text = visible(h.entry[3]);
      list.appendChild(el("li", {}, [featureLink(h.layer, h.size, h.entry[0]),
        el("span", {class: "muted", text: " " + fmt(h.entry[1]) + " firings "}),
        el("span", {class: "tokens", text: tokens}),
        el("div", {class: "snippet", text: text.length > 160 ? text.slice(0, 160) + "\u2026" : text})]));
    });
  });
}

// ---------------------------------------------------------------- feature page

function requested() {
  var p = new URLSearchParams(window.location.search);
  var layers = SA.index.layers;
  // a layer number, or "<layer>-<architecture>" in a study of several architectures
  var layerKey = p.get("layer") ? p.get("layer") : (layers[0] && String(layers[0].layer));
  var layer = layers.filter(function (l) { return String(l.layer) === layerKey; })[0];
  if (!layer) { return {error: "This study has no layer " + p.get("layer") + "."}; }
  var size = Number(p.get("size"));
  var entry = layer.sizes.filter(function (s) { return s.size === size; })[0];
  if (!entry) { return {error: "Layer " + layer.layer + " has no dictionary size " + p.get("size") + "."}; }
  var id = p.get("id");
  if (!/^\d+$/.test(id || "") || Number(id) >= entry.n) {
    return {error: "n=" + size + " has features 0.." + (entry.n - 1) + "; there is no feature " + id + "."};
  }
  return {layer: layer, size: entry, id: Number(id)};
}

function section(title, children, id) {
  return el("section", {class: "panel", id: id || ""}, [el("h2", {text: title})].concat(children));
}

function histogram(hist, count) {
  var NS = "http://www.w3.org/2000/svg";
  var w = 360, h = 120, pad = 18;
  var svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + (h + pad));
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h + pad));
  svg.setAttribute("class", "hist");
  var counts = hist.counts;
  var peak = Math.max.apply(null, counts.concat([1]));
  var bw = w / counts.length;
  counts.forEach(function (c, i) {
    var bh = c > 0 ? Math.max(1, Math.log1p(c) / Math.log1p(peak) * h) : 0;
    var r = document.createElementNS(NS, "rect");
    r.setAttribute("x", String(i * bw + 0.5));
    r.setAttribute("y", String(h - bh));
    r.setAttribute("width", String(Math.max(bw - 1, 1)));
    r.setAttribute("height", String(bh));
    var t = document.createElementNS(NS, "title");
    var lo = hist.max * i / counts.length, hi = hist.max * (i + 1) / counts.length;
    t.textContent = fmt(lo) + "\u2013" + fmt(hi) + ": " + c + " tokens";
    r.appendChild(t);
    svg.appendChild(r);
  });
  [[0, "0"], [w, fmt(hist.max)]].forEach(function (tick, i) {
    var t = document.createElementNS(NS, "text");
    t.setAttribute("x", String(tick[0]));
    t.setAttribute("y", String(h + pad - 4));
    t.setAttribute("text-anchor", i ? "end" : "start");
    t.textContent = tick[1];
    svg.appendChild(t);
  });
  return el("figure", {}, [svg, el("figcaption", {
    text: "Activation histogram over the held-out tokens where it fires (" + fmt(count) +
      " tokens; log-scaled counts, 0 to the largest activation)."})]);
}

function contextRow(ctx, peak) {
  var act = ctx[0], ids = ctx[4], acts = ctx[5], centre = ctx[3];
  var texts = decodeTokens(ids);
  var line = el("div", {class: "ctx"}, [el("span", {class: "ctx-act", text: fmt(act)})]);
  var body = el("span", {class: "ctx-text"});
  texts.forEach(function (text, i) {
    var shown = visible(text);
    var span = el("span", {class: "tok" + (i === centre ? " centre" : ""), text: shown,
                           title: "\u2039" + visible(tokenText(ids[i])) + "\u203A  activation " + fmt(acts[i], 4)});
    if (acts[i] > 0) {
      span.style.backgroundColor = "rgba(255, 118, 0, " + (0.12 + 0.8 * Math.min(1, acts[i] / (peak || 1))) + ")";
      span.classList.add("on");
    }
    body.appendChild(span);
  });
  line.appendChild(body);
  line.appendChild(el("span", {class: "ctx-doc muted", text: "doc " + ctx[1] + " @" + ctx[2]}));
  return line;
}

function tokenList(pairs) {
  return el("ol", {class: "tokens-list"}, pairs.map(function (p) {
    return el("li", {}, [el("code", {text: "\u2039" + visible(tokenText(p[0])) + "\u203A"}), " " + fmt(p[1])]);
  }));
}

function linkList(items, layer, size, label) {
  if (!items || !items.length) { return el("p", {class: "muted", text: "none"}); }
  return el("ol", {class: "links"}, items.map(function (it) {
    return el("li", {}, [featureLink(layer, size, it[0]), " " + label(it)]);
  }));
}

function umapThumb(layer, rec) {
  var u = layer.umap;
  if (!u || !rec.umap || rec.umap[2] === null || rec.umap[3] === null) { return el("p", {class: "muted", text: "Not on the joint map (the neighbours stage gave it no joint coordinates)."}); }
  var jx = rec.umap[2], jy = rec.umap[3];
  var box = el("div", {class: "umap", style: "width:" + u.width + "px;height:" + u.height + "px"});
  box.appendChild(el("img", {src: "data/layer" + layer.layer + "/" + u.png, alt: "joint UMAP of all sizes",
                             width: String(u.width), height: String(u.height)}));
  var clamp = function (v, hi) { return Math.min(Math.max(v, 0), hi); };  // beyond the frame: at its edge
  var px = clamp((jx - u.x[0]) / (u.x[1] - u.x[0]) * u.width, u.width);
  var py = clamp((1 - (jy - u.y[0]) / (u.y[1] - u.y[0])) * u.height, u.height);
  box.appendChild(el("span", {class: "marker", style: "left:" + (px - 6).toFixed(1) + "px;top:" + (py - 6).toFixed(1) + "px",
                              title: "this feature (" + fmt(jx) + ", " + fmt(jy) + ")"}));
  return box;
}

function renderFeature(req, rec) {
  var L = req.layer.layer, N = req.size.size, F = req.id;
  document.title = "n=" + N + " #" + F + " \u00B7 saeatlas";
  var main = document.getElementById("feature");
  main.textContent = "";
  var prevNext = document.getElementById("prev-next");
  prevNext.textContent = "";
  if (F > 0) { prevNext.appendChild(featureLink(L, N, F - 1, "\u2190 #" + (F - 1))); prevNext.appendChild(document.createTextNode(" ")); }
  if (F + 1 < req.size.n) { prevNext.appendChild(featureLink(L, N, F + 1, "#" + (F + 1) + " \u2192")); }
  var dead = rec.count === 0;
  main.appendChild(el("h1", {id: "feature-title", text: "Layer " + L + " \u00B7 n=" + N + " \u00B7 feature #" + F +
                                                      (dead ? " (never fired on the held-out tokens)" : "")}));
  main.appendChild(el("dl", {class: "stats"}, [
    el("dt", {text: "firings"}), el("dd", {text: fmt(rec.count)}),
    el("dt", {text: "density"}), el("dd", {text: fmt(rec.density)}),
    el("dt", {text: "mean activation"}), el("dd", {text: fmt(rec.mean)}),
    el("dt", {text: "max activation"}), el("dd", {text: fmt(rec.max)}),
    el("dt", {text: req.size.lobe_k === null ? "lobe" : "lobe (k=" + req.size.lobe_k + ")"}),
    el("dd", {id: "lobe", text: req.size.lobe_k === null ? "no lobes table (the lobes stage did not run)"
      : rec.lobe === null ? "not analysed (too few co-firing blocks)" : String(rec.lobe)})]));
  var grid = el("div", {class: "grid"});
  grid.appendChild(section("Activations", [histogram(rec.hist, rec.count)], "hist"));
  grid.appendChild(section("Logit lens", [el("div", {class: "two"}, [
    el("div", {}, [el("h3", {text: "promoted"}), tokenList(rec.logit_top)]),
    el("div", {}, [el("h3", {text: "suppressed"}), tokenList(rec.logit_bottom)])])], "logit"));
  main.appendChild(grid);
  var peak = rec.max || 1;
  var top = section("Top-activating contexts", rec.top.length ? rec.top.map(function (c) { return contextRow(c, peak); })
                    : [el("p", {class: "muted", text: "No context: the feature never fired."})], "top");
  main.appendChild(top);
  if (rec.quantiles.length) {
    main.appendChild(section("Contexts sampled across activation quantiles", rec.quantiles.map(function (q) {
      return el("div", {class: "quantile"}, [el("h3", {text: "quantile bin " + q[0]})].concat(
        q[1].map(function (c) { return contextRow(c, peak); })));
    }), "quantiles"));
  }
  var rel = el("div", {class: "grid"});
  rel.appendChild(section("Nearest neighbours (decoder cosine, n=" + N + ")",
    [rec.neighbours === null ? el("p", {class: "muted", text: "The neighbours stage did not run."})
      : linkList(rec.neighbours, L, N, function (it) { return "cos " + fmt(it[1]); })], "neighbours"));
  rel.appendChild(section("Most co-firing features (Jaccard of firing tokens)",
    [linkList(rec.cofiring, L, N, function (it) {
      return "shared " + fmt(it[1]) + ", P(it | this) " + fmt(it[2]) + ", Jaccard " + fmt(it[3]);
    })], "cofiring"));
  rel.appendChild(section("Most-correlated MLP neurons (Pearson r on held-out tokens)",
    [rec.neurons === null || rec.neurons === undefined ? el("p", {class: "muted", text: "The neurons analysis did not run."})
      : !rec.neurons.length ? el("p", {class: "muted", text: "none (the feature never fired)"})
      : el("ol", {class: "links"}, rec.neurons.map(function (it) {
        return el("li", {text: "neuron " + it[0] + ", r = " + fmt(it[1])});
      }))], "neurons"));
  var family = [];
  if (rec.parent) {
    family.push(el("p", {id: "parent"}, ["Parent in n=" + rec.parent.size + ": ",
      featureLink(L, rec.parent.size, rec.parent.id), " (" + rec.parent["class"] + ", decoder cos " + fmt(rec.parent.cos) + ")"]));
  } else if (req.size.has_parents) {
    family.push(el("p", {class: "muted", text: "No parent in the next smaller size."}));
  }
  if (rec.children) {
    family.push(el("h3", {text: "Children in n=" + rec.children.size}));
    family.push(el("div", {id: "children"}, [linkList(rec.children.items, L, rec.children.size, function (it) {
      return it[2] + ", cos " + fmt(it[1]);
    })]));
  }
  if (!family.length) { family.push(el("p", {class: "muted", text: "The splitting stage has no other size to link."})); }
  rel.appendChild(section("Across sizes", family, "family"));
  rel.appendChild(section("Joint UMAP", [umapThumb(req.layer, rec)], "umap"));
  main.appendChild(rel);
}

function showFeature() {
  var req = requested();
  if (req.error) { setState("error", req.error); return Promise.resolve(); }
  var c = Math.floor(req.id / SA.index.chunk);
  var key = req.layer.layer + "/" + req.size.size + "/" + c;
  var src = "data/layer" + req.layer.layer + "/n" + req.size.size + "/chunk-" + String(c).padStart(5, "0") + ".js";
  return (SA.chunks[key] ? Promise.resolve() : loadScript(src)).then(function () {
    var records = SA.chunks[key] || [];
    var rec = records[req.id - c * SA.index.chunk];
    if (!rec || rec.id !== req.id) { throw new Error(src + " does not hold feature " + req.id); }
    renderFeature(req, rec);
  });
}

// ---------------------------------------------------------------- start

function start() {
  if (!SA.index || !SA.vocab) { setState("error", "The browser's data (data/sizes.js, data/vocab.js) did not load."); return; }
  var page = document.body.getAttribute("data-page");
  var work = page === "feature" ? showFeature() : renderIndex();
  work.then(function () {
    if (document.body.getAttribute("data-state") === "loading") { setState("ready"); }
  }, function (err) { setState("error", String(err && err.message || err)); });
}

// The data scripts come after this one in the page: start once they have all run.
document.addEventListener("DOMContentLoaded", start);
