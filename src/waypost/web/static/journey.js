// Draws the journey on a Leaflet map. The route and stops are vector layers, so they show
// even when no tile loads; the server-drawn SVG stays in place when this script cannot run.
(function () {
  "use strict";
  var holder = document.getElementById("map");
  var source = document.getElementById("journey-data");
  if (!holder || !source || typeof L === "undefined") { return; }
  var journey = JSON.parse(source.textContent);
  if (!journey.route.length) { return; }

  var sketch = document.getElementById("route-sketch");
  if (sketch) { sketch.remove(); }
  var map = L.map(holder, { scrollWheelZoom: false });
  L.tileLayer(journey.tiles.url, { attribution: journey.tiles.attribution, maxZoom: 19 }).addTo(map);

  var line = L.polyline(journey.route, { color: "#1f6f78", weight: 5, opacity: 0.9 }).addTo(map);
  var placed = journey.photos.filter(function (p) { return p.placed && p.taken_at; });
  placed.forEach(function (photo, index) {
    var marker = L.marker([photo.latitude, photo.longitude], {
      icon: L.divIcon({ className: "route-number", html: String(index + 1), iconSize: [22, 22] }),
      title: photo.filename || "photo " + (index + 1)
    }).addTo(map);
    var figure = document.createElement("a");
    figure.href = photo.display_url;
    var image = document.createElement("img");
    image.src = photo.thumbnail_url;
    image.width = 160;
    image.alt = photo.filename || "photo";
    figure.appendChild(image);
    marker.bindPopup(figure);
  });
  map.fitBounds(line.getBounds(), { padding: [24, 24], maxZoom: 15 });
})();
