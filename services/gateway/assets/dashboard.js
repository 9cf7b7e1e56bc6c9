// Leerspoor dashboard: draws each chart from the JSON beside it with uPlot. The same
// figures are in the table under every chart, so nothing depends on this script.
(function () {
  "use strict";
  var colours = ["#1f5fa8", "#d1495b", "#2e9e6b", "#edae49", "#7b4ea3", "#00798c", "#6b6b6b"];
  function monthStart(month) {
    var parts = month.split("-");
    return Date.UTC(Number(parts[0]), Number(parts[1]) - 1, 1) / 1000;
  }
  function draw(element) {
    var source = document.getElementById(element.getAttribute("data-chart"));
    if (!source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    if (!data.months.length) { return; }
    var xs = data.months.map(monthStart);
    var columns = [xs];
    var series = [{}];
    data.lines.forEach(function (line, index) {
      columns.push(line.values);
      series.push({ label: line.name, stroke: colours[index % colours.length], width: 2,
                    points: { show: data.months.length < 40 } });
    });
    if (data.goal) {
      columns.push(xs.map(function () { return data.goal.value; }));
      series.push({ label: data.goal.name, stroke: "#444", width: 1, dash: [6, 4], points: { show: false } });
    }
    var width = Math.max(320, Math.min(element.parentElement.clientWidth - 8, 1100));
    new uPlot({
      width: width,
      height: 260,
      series: series,
      scales: { x: { time: true } },
      axes: [{ splits: function () {
        var step = Math.ceil(xs.length / 12);
        return xs.filter(function (x, index) { return index % step === 0; });
      }, values: function (u, splits) {
        return splits.map(function (s) {
          var d = new Date(s * 1000);
          return d.getUTCFullYear() + "-" + String(d.getUTCMonth() + 1).padStart(2, "0");
        });
      } }, {}],
      legend: { live: false },
    }, columns, element);
    element.setAttribute("data-drawn", "true");
  }
  document.querySelectorAll("div.plot[data-chart]").forEach(draw);
  document.documentElement.setAttribute("data-charts-ready", "true");
})();
