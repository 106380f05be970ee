// The journey page's script: a Leaflet map of the route with a thumbnail marker per numbered
// stop, and a photo viewer that swipes on phones. Without it the page still works: the
// server-drawn SVG shows the route, each card links to its stop in the timeline, and each
// thumbnail is a plain link to its image. Text from the journey (title, place names) only
// ever reaches the page through textContent or attributes, never as HTML.
(function () {
  "use strict";
  var source = document.getElementById("journey-data");
  if (!source) { return; }
  var journey = JSON.parse(source.textContent);
  var byId = {};
  journey.photos.forEach(function (photo) { byId[photo.id] = photo; });

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function plural(count, word) { return count + " " + word + (count === 1 ? "" : "s"); }

  // --- the viewer: a thumbnail opens its display image over the page -----------------------

  var openers = Array.prototype.slice.call(document.querySelectorAll(".timeline a.thumb"));
  var order = openers.map(function (link) { return link.closest("[data-photo]").getAttribute("data-photo"); });
  var viewer = null;
  var current = -1;
  var returnFocus = null;

  function caption(index) {  // "Belém · 09:04": the place and the local time, nothing technical
    var item = openers[index].closest("[data-photo]");
    var chapter = item.closest(".chapter");
    var parts = [];
    if (chapter && chapter.getAttribute("data-place")) { parts.push(chapter.getAttribute("data-place")); }
    item.querySelectorAll(".meta .when").forEach(function (node) { parts.push(node.textContent.trim()); });
    return parts.join(" \u00b7 ");
  }

  function buildViewer() {
    var root = element("div", "viewer");
    root.setAttribute("role", "dialog");
    root.setAttribute("aria-modal", "true");
    root.setAttribute("aria-label", "Photo viewer");
    root.hidden = true;
    var figure = element("figure", "viewer-figure");
    var image = element("img", "viewer-image");
    image.alt = "";
    var text = element("figcaption", "viewer-caption");
    figure.appendChild(image);
    figure.appendChild(text);
    var close = element("button", "viewer-close", "\u00d7");
    var prev = element("button", "viewer-prev", "\u2039");
    var next = element("button", "viewer-next", "\u203a");
    [[close, "Close"], [prev, "Previous photo"], [next, "Next photo"]].forEach(function (pair) {
      pair[0].type = "button";
      pair[0].setAttribute("aria-label", pair[1]);
      root.appendChild(pair[0]);
    });
    root.insertBefore(figure, root.firstChild);
    close.addEventListener("click", hide);
    prev.addEventListener("click", function () { show(current - 1); });
    next.addEventListener("click", function () { show(current + 1); });
    root.addEventListener("click", function (event) {
      if (event.target === root || event.target === figure) { hide(); }
    });
    image.addEventListener("load", function () { root.classList.remove("loading"); });
    image.addEventListener("error", function () { root.classList.remove("loading"); });
    var touchX = null;
    root.addEventListener("touchstart", function (event) { touchX = event.touches[0].clientX; }, { passive: true });
    root.addEventListener("touchend", function (event) {
      if (touchX === null) { return; }
      var moved = event.changedTouches[0].clientX - touchX;
      touchX = null;
      if (Math.abs(moved) > 50) { show(current + (moved < 0 ? 1 : -1)); }
    });
    document.body.appendChild(root);
    return { root: root, image: image, text: text, close: close, prev: prev, next: next };
  }

  function show(index) {
    if (index < 0 || index >= openers.length) { return; }
    viewer = viewer || buildViewer();
    current = index;
    var link = openers[index];
    viewer.root.classList.add("loading");
    viewer.image.src = link.href;
    viewer.image.alt = link.querySelector("img") ? link.querySelector("img").alt : "";
    viewer.text.textContent = caption(index) + "  (" + (index + 1) + " of " + openers.length + ")";
    viewer.prev.disabled = index === 0;
    viewer.next.disabled = index === openers.length - 1;
    if (viewer.root.hidden) {
      returnFocus = document.activeElement;
      viewer.root.hidden = false;
      document.documentElement.classList.add("viewer-open");
      viewer.close.focus();
    }
    [index - 1, index + 1].forEach(function (near) {  // the neighbours load while this one is looked at
      if (near >= 0 && near < openers.length) { new Image().src = openers[near].href; }
    });
  }

  function hide() {
    if (!viewer || viewer.root.hidden) { return; }
    viewer.root.hidden = true;
    viewer.image.removeAttribute("src");
    document.documentElement.classList.remove("viewer-open");
    if (returnFocus && returnFocus.focus) { returnFocus.focus(); }
  }

  // a plain click opens the viewer; a click asking for a new tab or window keeps the link's way
  function openFrom(event, link) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey
        || event.altKey) { return; }
    var index = order.indexOf(link.closest("[data-photo]").getAttribute("data-photo"));
    if (index < 0) { return; }
    event.preventDefault();
    show(index);
  }

  openers.forEach(function (link) {
    link.addEventListener("click", function (event) { openFrom(event, link); });
  });

  document.addEventListener("keydown", function (event) {
    if (!viewer || viewer.root.hidden) { return; }
    if (event.key === "Escape") { hide(); event.preventDefault(); }
    else if (event.key === "ArrowLeft") { show(current - 1); event.preventDefault(); }
    else if (event.key === "ArrowRight") { show(current + 1); event.preventDefault(); }
    else if (event.key === "Tab") {  // keep focus inside the dialog
      var buttons = [viewer.close, viewer.prev, viewer.next].filter(function (b) { return !b.disabled; });
      var at = buttons.indexOf(document.activeElement);
      buttons[(at + (event.shiftKey ? buttons.length - 1 : 1)) % buttons.length].focus();
      event.preventDefault();
    }
  });

  // --- the map: route and markers are vector layers, so they show even when no tile loads ---

  var holder = document.getElementById("map");
  var mapped = journey.photos.filter(function (p) { return p.position; });
  if (!holder || typeof L === "undefined" || !mapped.length) { return; }

  var sketch = document.getElementById("route-sketch");
  if (sketch) { sketch.remove(); }
  var map = L.map(holder, { scrollWheelZoom: false, worldCopyJump: true, zoomSnap: 0.5 });
  // The page itself sends no referrer; a tile request sends the site's origin alone (never the
  // path, which holds the share token), as tile servers such as OpenStreetMap's ask for.
  var tiles = L.tileLayer(journey.tiles.url, {
    attribution: journey.tiles.attribution, maxZoom: 19, referrerPolicy: "strict-origin"
  });
  tiles.once("tileerror", function () { holder.classList.add("tiles-failed"); });
  tiles.addTo(map);

  var bounds = L.latLngBounds([]);
  journey.legs.forEach(function (leg) {
    var style = leg.mode === "flight"
      ? { color: "#8a4f7d", weight: 3, opacity: 0.9, dashArray: "8 8", className: "route-flight" }
      : { color: "#1f6f78", weight: 5, opacity: 0.9, className: "route-ground" };
    var line = L.polyline(leg.path, style).addTo(map);
    line.getLatLngs().forEach(function (point) { bounds.extend(point); });
  });

  function openPhoto(id) {
    var index = order.indexOf(id);
    if (index >= 0) { show(index); }
  }

  // photos on the map but at no stop (placed by time between two, or off the route): small dots
  var inStop = {};
  journey.numbered_stops.forEach(function (stop) { stop.photos.forEach(function (id) { inStop[id] = true; }); });
  mapped.forEach(function (photo) {
    bounds.extend(photo.position);
    if (inStop[photo.id]) { return; }
    L.circleMarker(photo.position, { radius: 6, color: "#ffffff", weight: 2, fillColor: "#8e989e", fillOpacity: 1,
      className: "route-stray " + photo.placement })
      .bindTooltip(element("span", null, photo.filename + (photo.issue ? " (" + photo.issue + ")" : "")))
      .on("click", function () { openPhoto(photo.id); })
      .addTo(map);
  });

  // one marker per numbered stop: a thumbnail of its photos with the stop's number
  var markers = {};
  journey.numbered_stops.forEach(function (stop) {
    var icon = element("span", "marker-body");
    var cover = stop.cover && byId[stop.cover];
    if (cover) {
      var image = element("img");
      image.src = cover.thumbnail_url;
      image.alt = "";
      icon.appendChild(image);
    }
    icon.appendChild(element("span", "marker-number", String(stop.number)));
    var marker = L.marker(stop.position, {
      icon: L.divIcon({ className: "route-number route-thumb", html: icon, iconSize: [48, 48] }),
      title: stop.number + ". " + stop.label + " \u00b7 " + plural(stop.photos.length, "photo"),
      keyboard: true
    }).addTo(map);
    marker.on("click", function () { if (stop.cover) { openPhoto(stop.cover); } });
    markers[stop.number] = marker;
    bounds.extend(stop.position);
  });
  map.fitBounds(bounds, { padding: [32, 32], maxZoom: 15 });

  // a tap on a card in "Where you were" centres its stop's marker on the map
  var chosen = null;
  document.querySelectorAll(".stops a.stop[data-stop]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var marker = markers[link.getAttribute("data-stop")];
      if (!marker) { return; }
      event.preventDefault();
      if (chosen) { L.DomUtil.removeClass(chosen.getElement(), "chosen"); chosen.setZIndexOffset(0); }
      chosen = marker;
      L.DomUtil.addClass(marker.getElement(), "chosen");
      marker.setZIndexOffset(1000);  // above the markers it may overlap
      holder.scrollIntoView({ block: "start" });
      map.setView(marker.getLatLng(), Math.max(map.getZoom(), 14), { animate: false });
    });
  });
})();
