// Command plot draws docs/performance.png from the JSON that cellos-bench
// writes: events per second against the number of objects projected, for
// the operator, the naive projector, the ceiling and the minimal ceiling,
// on the burst-shaped streams (every object new, 25 cells per formation):
// the burst workloads and the rebuilds from sequence 1. With -soak-out it also draws the soak
// (docs/soak.png): live objects, the API server's objects and the
// processes' RSS over time, one line style per input file.
//
//	go run . -in results.json -out ../../docs/performance.png -soak-out ../../docs/soak.png
//
// It is a module of its own so that the operator's module does not depend
// on a plotting library.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"log"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

type result struct {
	Workload     string  `json:"workload"`
	System       string  `json:"system"`
	Events       int     `json:"events"`
	Objects      int     `json:"objects"`
	EventsPerSec float64 `json:"eventsPerSec"`
	Incomplete   string  `json:"incomplete"`
}

type results struct {
	Machine string   `json:"machine"`
	Results []result `json:"results"`
	Soak    *soak    `json:"soak"`
}

type soak struct {
	Rate       float64      `json:"rate"`
	Samples    []soakSample `json:"samples"`
	Incomplete string       `json:"incomplete"`
}

type soakSample struct {
	Seconds         float64 `json:"seconds"`
	LiveFormations  float64 `json:"liveFormations"`
	LiveCells       float64 `json:"liveCells"`
	APIFormations   float64 `json:"apiFormations"`
	APICells        float64 `json:"apiCells"`
	OperatorRSSMiB  float64 `json:"operatorRSSMiB"`
	APIServerRSSMiB float64 `json:"apiserverRSSMiB"`
	EtcdRSSMiB      float64 `json:"etcdRSSMiB"`
}

// series are drawn in this order, each in its colour and marker.
var series = []struct {
	system string
	label  string
	color  color.RGBA
	shape  draw.GlyphDrawer
}{
	{"ceiling", "ceiling (oracle: create + 1 status write, 16 in flight)", color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, draw.SquareGlyph{}},
	{"operator", "operator (bin/manager, default flags)", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, draw.CircleGlyph{}},
	{"naive", "naive (Get, create, Status().Update per event)", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, draw.TriangleGlyph{}},
	{"minimal", "minimal ceiling (the ceiling's writes, minimal objects)", color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, draw.PlusGlyph{}},
}

func main() {
	in := flag.String("in", "", "cellos-bench -json output; several files, comma-separated, are drawn together (say, make bench's and a -memory-only run's, or several soaks)")
	out := flag.String("out", "", "PNG to draw events/s against objects into; none when empty")
	soakOut := flag.String("soak-out", "", "PNG to draw the soak into; none when empty")
	flag.Parse()
	var rs results
	var soaks []*soak
	for _, path := range strings.Split(*in, ",") {
		raw, err := os.ReadFile(path)
		if err != nil {
			log.Fatal(err)
		}
		var one results
		if err := json.Unmarshal(raw, &one); err != nil {
			log.Fatalf("%s: %v", path, err)
		}
		if rs.Machine == "" {
			rs.Machine = one.Machine
		}
		rs.Results = append(rs.Results, one.Results...)
		if one.Soak != nil && one.Soak.Incomplete == "" {
			soaks = append(soaks, one.Soak)
		}
	}
	if *out != "" {
		drawPerformance(rs, *in, *out)
	}
	if *soakOut != "" {
		// make bench asks for the soak whether or not it fitted the time:
		// the harness's report says why it is missing.
		if len(soaks) == 0 {
			log.Printf("%s has no complete soak: %s not drawn", *in, *soakOut)
			return
		}
		drawSoak(soaks, rs.Machine, *soakOut)
	}
}

// drawPerformance draws events/s against objects projected.
func drawPerformance(rs results, in, out string) {
	p := plot.New()
	p.Title.Text = "Events/s end to end against objects projected (burst-shaped streams)"
	p.X.Label.Text = "objects (Formations + Cells), log scale"
	p.Y.Label.Text = "events/s, log scale"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = ticks125{}, ticks125{}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(10), vg.Points(10)
	p.Add(plotter.NewGrid())
	drawn := 0
	lo, hi := plotter.XY{X: math.Inf(1), Y: math.Inf(1)}, plotter.XY{X: math.Inf(-1), Y: math.Inf(-1)}
	for _, s := range series {
		var pts plotter.XYs
		for _, r := range rs.Results {
			if r.System != s.system || r.Incomplete != "" || r.EventsPerSec <= 0 || !burstShaped(r.Workload) {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(r.Objects), Y: r.EventsPerSec})
		}
		if len(pts) == 0 {
			continue
		}
		slices.SortFunc(pts, func(a, b plotter.XY) int { return int(a.X - b.X) })
		for _, pt := range pts {
			lo.X, lo.Y = min(lo.X, pt.X), min(lo.Y, pt.Y)
			hi.X, hi.Y = max(hi.X, pt.X), max(hi.Y, pt.Y)
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			log.Fatal(err)
		}
		line.Color, line.Width = s.color, vg.Points(1.5)
		points.Color, points.Shape, points.Radius = s.color, s.shape, vg.Points(3.5)
		p.Add(line, points)
		p.Legend.Add(s.label, line, points)
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: rateLabels(pts)})
		if err != nil {
			log.Fatal(err)
		}
		for i := range labels.TextStyle {
			labels.TextStyle[i].Color = s.color
			labels.TextStyle[i].XAlign = draw.XLeft
		}
		labels.Offset = vg.Point{X: vg.Points(5), Y: vg.Points(2)}
		p.Add(labels)
		drawn++
	}
	if drawn == 0 {
		log.Fatalf("%s has no burst or rebuild result to plot", in)
	}
	// Room around the points for their labels.
	p.X.Min, p.X.Max = lo.X/1.3, hi.X*1.6
	p.Y.Min, p.Y.Max = lo.Y/1.5, hi.Y*1.5
	if rs.Machine != "" {
		p.X.Label.Text += "\n" + rs.Machine
	}
	if err := p.Save(9*vg.Inch, 5.5*vg.Inch, out); err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", out)
}

// soakPanels are the soak plot's panels, top to bottom, each with its
// series in its colour.
var soakPanels = []struct {
	title, unit string
	series      []soakSeries
}{
	{"Objects", "objects", []soakSeries{
		{"live in the operator (cellos_operator_live_objects)", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, func(s soakSample) float64 { return s.LiveFormations + s.LiveCells }},
		{"in the API server (Formations + Cells)", color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, func(s soakSample) float64 { return s.APIFormations + s.APICells }},
	}},
	{"The operator's RSS", "MiB", []soakSeries{
		{"operator (VmRSS)", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, func(s soakSample) float64 { return s.OperatorRSSMiB }},
	}},
	{"The control plane's RSS", "MiB", []soakSeries{
		{"kube-apiserver (VmRSS)", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, func(s soakSample) float64 { return s.APIServerRSSMiB }},
		{"etcd (VmRSS)", color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, func(s soakSample) float64 { return s.EtcdRSSMiB }},
	}},
}

type soakSeries struct {
	label string
	color color.RGBA
	value func(soakSample) float64
}

// runDashes tell the soaks of several input files apart, named in
// runStyles.
var (
	runDashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}, {vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}}
	runStyles = []string{"solid", "dashed", "dotted", "dash-dotted"}
)

// drawSoak draws the soaks' series over time, one panel per quantity,
// sharing the time axis.
func drawSoak(soaks []*soak, machine, out string) {
	plots := make([][]*plot.Plot, len(soakPanels))
	for i, panel := range soakPanels {
		p := plot.New()
		p.Title.Text = panel.title
		p.Y.Label.Text = panel.unit
		p.X.Min, p.Y.Min = 0, 0
		p.X.Label.Text = "seconds since the first event"
		// Every series starts low, and the room above the highest point
		// keeps the top left free for the legend.
		p.Legend.Top, p.Legend.Left = true, true
		p.Legend.XOffs = vg.Points(10)
		p.Add(plotter.NewGrid())
		for run, s := range soaks {
			for _, ser := range panel.series {
				pts := make(plotter.XYs, len(s.Samples))
				for j, x := range s.Samples {
					pts[j] = plotter.XY{X: x.Seconds, Y: ser.value(x)}
					p.Y.Max = max(p.Y.Max, 1.35*pts[j].Y)
				}
				line, err := plotter.NewLine(pts)
				if err != nil {
					log.Fatal(err)
				}
				line.Color, line.Width, line.Dashes = ser.color, vg.Points(1.5), runDashes[run%len(runDashes)]
				p.Add(line)
				if run == 0 {
					p.Legend.Add(ser.label, line)
				}
			}
		}
		plots[i] = []*plot.Plot{p}
	}
	plots[0][0].Title.Text = fmt.Sprintf("Soak at %.0f events/s, short TTLs: %s", soaks[0].Rate, soakPanels[0].title)
	if len(soaks) > 1 {
		var runs []string
		for i := range soaks {
			runs = append(runs, fmt.Sprintf("run %d %s", i+1, runStyles[i%len(runStyles)]))
		}
		plots[0][0].Title.Text += " (" + strings.Join(runs, ", ") + ")"
	}
	if machine != "" {
		last := plots[len(plots)-1][0]
		last.X.Label.Text += "\n" + machine
	}
	const w, h = 9 * vg.Inch, 10 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Points(10), PadY: vg.Points(10), PadTop: vg.Points(5), PadBottom: vg.Points(5), PadLeft: vg.Points(5), PadRight: vg.Points(5)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(out)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", out)
}

// burstShaped tells the workloads whose streams have one shape (every
// object new, 25 cells per formation), so that only size differs along the
// x axis: the bursts, and the rebuilds from sequence 1.
func burstShaped(workload string) bool {
	return strings.HasPrefix(workload, "burst") || strings.HasSuffix(workload, " rebuild")
}

func rateLabels(pts plotter.XYs) []string {
	out := make([]string, len(pts))
	for i, p := range pts {
		out[i] = fmt.Sprintf("%.0f", p.Y)
	}
	return out
}

// ticks125 labels 1, 2 and 5 times each power of ten, which a log axis
// spanning less than a decade or two needs to be readable.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for decade := math.Pow(10, math.Floor(math.Log10(lo))); decade <= hi; decade *= 10 {
		for m := 1; m < 10; m++ {
			v := float64(m) * decade
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'f', -1, 64)
				if v >= 1000 {
					t.Label = strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
				}
			}
			ts = append(ts, t)
		}
	}
	return ts
}
