// Package scrapetest scrapes a Prometheus /metrics endpoint over HTTP in
// tests and reads values out of the scrape.
package scrapetest

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// Client scrapes without keeping connections alive, so that a test leaves
// no connection goroutine behind.
var Client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// Scrape fetches url and parses the text exposition.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	resp, err := Client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// Families is one parsed scrape, by metric family name.
type Families map[string]*dto.MetricFamily

// Value returns the sum over the series of family name whose labels
// include want of their values (a counter's or gauge's value, a
// histogram's sample count); 0 when there is no such series.
func (f Families) Value(name string, want map[string]string) float64 {
	fam, ok := f[name]
	if !ok {
		return 0
	}
	total := 0.0
	for _, m := range fam.GetMetric() {
		if !matches(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

func matches(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
