// Draws the journey on a Leaflet map. The route and stops are vector layers, so they show
// even when no tile loads; the server-drawn SVG stays in place when this script cannot run.
(function () {
  "use strict";
  var holder = document.getElementById("map");
  var source = document.getElementById("journey-data");
  if (!holder || !source || typeof L === "undefined") { return; }
  var journey = JSON.parse(source.textContent);
  var mapped = journey.photos.filter(function (p) { return p.position; });
  if (!mapped.length) { return; }

  var sketch = document.getElementById("route-sketch");
  if (sketch) { sketch.remove(); }
  var map = L.map(holder, { scrollWheelZoom: false, worldCopyJump: true });
  L.tileLayer(journey.tiles.url, { attribution: journey.tiles.attribution, maxZoom: 19 }).addTo(map);

  var bounds = L.latLngBounds([]);
  journey.legs.forEach(function (leg) {
    var style = leg.mode === "flight"
      ? { color: "#8a4f7d", weight: 3, opacity: 0.9, dashArray: "8 8" }
      : { color: "#1f6f78", weight: 5, opacity: 0.9 };
    var line = L.polyline(leg.path, style).addTo(map);
    line.getLatLngs().forEach(function (point) { bounds.extend(point); });
  });

  function popup(photo) {
    var figure = document.createElement("a");
    figure.href = photo.display_url;
    var image = document.createElement("img");
    image.src = photo.thumbnail_url;
    image.width = 160;
    image.alt = photo.filename || "photo";
    figure.appendChild(image);
    return figure;
  }

  mapped.forEach(function (photo) {
    var kind = "route-number " + photo.placement;
    var marker = L.marker(photo.position, {
      icon: L.divIcon({ className: kind, html: String(photo.number), iconSize: [22, 22] }),
      title: (photo.filename || "photo " + photo.number) + (photo.issue ? " (" + photo.issue + ")" : "")
    }).addTo(map);
    marker.bindPopup(popup(photo));
    bounds.extend(photo.position);
  });

  journey.stops.forEach(function (stop) {
    L.circleMarker([stop.latitude, stop.longitude], { radius: 10, color: "#c2561a", weight: 2, fillOpacity: 0.15 })
      .bindTooltip(stop.label + " · " + stop.photo_count + (stop.photo_count === 1 ? " photo" : " photos"))
      .addTo(map);
  });
  map.fitBounds(bounds, { padding: [24, 24], maxZoom: 15 });
})();
