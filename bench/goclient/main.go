// zsbench-client: bench's Grafana-like client, compiled so that it takes little of the CPU
// it measures. It launches the plugin through hashicorp/go-plugin's client as Grafana does
// (handshake, Grafana's plugin set, the 12.4+ environment) or dials a bare server, opens
// streams as Grafana's Live does (SubscribeStream, 32 at a time, then every RunStream at
// once; a dashboard's panels do QueryData first and subscribe with {"after": …}), or opens a
// file's paths at once as the chaos run's burst (burst.go), and prints one JSON object of raw
// figures on stdout for bench/goclient.py (or bench/chaos/burst.py) to judge.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "zsbench/pluginv2"
)

// permittedHostEnv is what Grafana 12.4+ passes on from its own environment (pkg/plugins/envvars).
var permittedHostEnv = []string{
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
	"TMPDIR", "PLUGIN_UNIX_SOCKET_DIR",
}

// grafanaEnv is what Grafana sets for a datasource plugin before go-plugin adds its own.
var grafanaEnv = []string{
	"GF_VERSION=12.4.0", "GF_EDITION=Open Source", "GF_ENTERPRISE_LICENSE_PATH=",
	"GF_ENTERPRISE_APP_URL=http://localhost:3000/",
}

// grafanaPluginSet is the set Grafana registers for protocol version 2; each hands out the connection.
var grafanaPluginSet = []string{"diagnostics", "resource", "data", "stream", "admission", "conversion", "renderer"}

// What the client tells on stderr as it goes, for a profiler (bench/profile.py) to start on.
const (
	PluginUp   = "zsbench-client: plugin up, pid"
	WindowOpen = "zsbench-client: window open"
)

type connPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (connPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (connPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return c, nil
}

type settingsFlag []string

func (s *settingsFlag) String() string     { return strings.Join(*s, ",") }
func (s *settingsFlag) Set(v string) error { *s = append(*s, v); return nil }

type options struct {
	executable, addr, pattern, jsonData, logLevel, uid, burst string
	settings                                                  settingsFlag
	count, gate, serverPid, workers                           int
	subscribe                                                 bool
	queryHours                                                float64
	tickMs                                                    float64
	wait, warmup, window, hold, burstRead                     time.Duration
}

// stream is one RunStream's figures; only its own goroutine writes them until the run ends.
type stream struct {
	path                string
	called, first, live time.Time
	// shown is when the panel had its first row after its query's range: the SubscribeStream
	// reply's rows (Grafana hands them to the subscriber as its first message) or RunStream's.
	shown               time.Time
	failed, message     string
	failedAt            time.Time
	lastNs              int64
	outOfOrder          bool
	rows, packets       int
	latencies           []float64
	lastArrival         time.Time
	maxGap, maxLateness time.Duration
	// firstLate and lastLate are when rows over 2 ticks late arrived in the window (ns, 0: none).
	firstLate, lastLate int64
}

type result struct {
	Client         string             `json:"client"`
	PluginPid      int                `json:"plugin_pid"`
	HandshakeS     float64            `json:"handshake_s"`
	Streams        int                `json:"streams"`
	FirstPacketS   []float64          `json:"first_packet_s"`
	FromStartS     []float64          `json:"from_start_s"`
	FirstLiveRowS  []float64          `json:"first_live_row_s"`
	PanelFirstRowS []float64          `json:"panel_first_row_s"`
	StartS         float64            `json:"start_s"`
	StartPluginCPU float64            `json:"start_plugin_cpu_s"`
	StartClientCPU float64            `json:"start_client_cpu_s"`
	QueryDataS     []float64          `json:"query_data_s"`
	Silent         int                `json:"silent"`
	OutOfOrder     int                `json:"out_of_order"`
	Failed         map[string]int     `json:"failed"`
	Errors         map[string]string  `json:"errors"`
	FailedAtS      []float64          `json:"failed_at_s"`
	WindowS        float64            `json:"window_s"`
	Rows           int                `json:"rows"`
	Packets        int                `json:"packets"`
	PluginCPU      float64            `json:"plugin_cpu_s"`
	ClientCPU      float64            `json:"client_cpu_s"`
	RssBeforeKiB   int                `json:"plugin_rss_before_kib"`
	RssKiB         int                `json:"plugin_rss_kib"`
	Late           int                `json:"late_streams"`
	LatencyMs      map[string]float64 `json:"latency_ms"`
	LateFromS      float64            `json:"late_rows_from_s"`
	LateUntilS     float64            `json:"late_rows_until_s"`
}

func main() {
	var o options
	flag.StringVar(&o.executable, "plugin", "", "the plugin executable to launch through go-plugin")
	flag.StringVar(&o.addr, "addr", "", "or: dial this gRPC server directly (unix:/path or host:port)")
	flag.IntVar(&o.serverPid, "server-pid", 0, "with -addr: the server process to measure")
	flag.Var(&o.settings, "setting", "a grafana.ini [plugin.<id>] key=value (repeatable)")
	flag.StringVar(&o.jsonData, "json-data", "{}", "the datasource's jsonData")
	flag.StringVar(&o.uid, "uid", "zmqstream-bench", "the datasource's uid (its streams share one budget)")
	flag.IntVar(&o.workers, "workers", 0, "wait until CheckHealth reports this many workers")
	flag.StringVar(&o.pattern, "paths", "custom-0-{i}-50", "channel paths; {i} counts from 1")
	flag.IntVar(&o.count, "n", 100, "how many streams")
	flag.IntVar(&o.gate, "gate", 32, "SubscribeStream (and QueryData) calls in flight at once")
	flag.BoolVar(&o.subscribe, "subscribe", true, "SubscribeStream before RunStream, as Grafana does")
	flag.Float64Var(&o.queryHours, "query-hours", 0, "a dashboard: QueryData over this many hours first, then subscribe with {\"after\": …}")
	flag.Float64Var(&o.tickMs, "tick-ms", 50, "the channels' tick, for lateness")
	flag.DurationVar(&o.wait, "wait", 20*time.Second, "how long a stream may take to send its first packet")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "after every first packet, before the window")
	flag.DurationVar(&o.window, "seconds", 0, "the steady window (0: none)")
	flag.StringVar(&o.logLevel, "log-level", "warn", "the plugin's log lines shown on stderr from this level up")
	flag.DurationVar(&o.hold, "hold", 0, "wait this long after the plugin is up (for a profiler to attach)")
	flag.StringVar(&o.burst, "burst", "", "instead: open this file's paths (one a line) at once, each subscribed then run")
	flag.DurationVar(&o.burstRead, "burst-read", 2*time.Second, "with -burst: how long a stream is read after its first packet")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "zsbench-client:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	var paths []string
	if o.burst != "" {
		var err error
		if paths, err = burstPaths(o.burst); err != nil {
			return err
		}
	}
	r := result{Failed: map[string]int{}, Errors: map[string]string{}, LatencyMs: map[string]float64{}, Streams: o.count}
	var conn *grpc.ClientConn
	if o.executable != "" {
		started := time.Now()
		client, c, pid, err := launch(o)
		if err != nil {
			return err
		}
		defer stop(client, pid)
		conn, r.PluginPid, r.HandshakeS = c, pid, time.Since(started).Seconds()
		r.Client = "Go, hashicorp/go-plugin client"
	} else {
		c, err := grpc.Dial(o.addr, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
		if err != nil {
			return err
		}
		defer c.Close()
		conn, r.PluginPid, r.Client = c, o.serverPid, "Go, direct gRPC"
	}
	pctx := &pb.PluginContext{
		OrgId: 1, PluginId: "zmqstream-stream-datasource", PluginVersion: "0.1.0",
		UserAgent: "Grafana/12.4.0 (linux; amd64)",
		User:      &pb.User{Login: "admin", Name: "admin", Role: "Admin"},
		DataSourceInstanceSettings: &pb.DataSourceInstanceSettings{
			Id: 1, Name: "zmqstream", Uid: o.uid, JsonData: []byte(o.jsonData), LastUpdatedMS: 1,
		},
	}
	if o.workers > 0 {
		if err := waitWorkers(conn, pctx, o.workers); err != nil {
			return err
		}
	}
	if r.PluginPid > 0 {
		r.RssBeforeKiB = rssKiB(r.PluginPid)
	}
	fmt.Fprintf(os.Stderr, "%s %d\n", PluginUp, r.PluginPid)
	time.Sleep(o.hold)
	limit := o.wait + o.warmup + o.window + time.Minute
	watchdog := time.AfterFunc(limit, func() {
		fmt.Fprintf(os.Stderr, "zsbench-client: still running after %s; its goroutines:\n", limit)
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		os.Exit(2)
	})
	if paths != nil {
		opened := burst(o, conn, pctx, paths)
		opened.Client = r.Client
		watchdog.Stop()
		return json.NewEncoder(os.Stdout).Encode(opened)
	}
	drive(o, conn, pctx, &r)
	watchdog.Stop()
	return json.NewEncoder(os.Stdout).Encode(r)
}

// stop is go-plugin's Kill (Shutdown, close, 2 s, SIGKILL), bounded: 1.0.1's Shutdown call has no
// deadline, so a plugin that never answers it would keep this client, and the benchmark, waiting.
func stop(client *plugin.Client, pid int) {
	stopped := make(chan struct{})
	go func() { client.Kill(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		fmt.Fprintln(os.Stderr, "zsbench-client: the plugin did not stop within 5 s of Shutdown; killed")
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// launch starts the plugin as Grafana 12.4+ does: its environment is Grafana's variables, the
// plugin's ini keys and the permitted host variables only (go-plugin 1.0.1 has no SkipHostEnv and
// appends os.Environ(), so this process's own environment is emptied first).
func launch(o options) (*plugin.Client, *grpc.ClientConn, int, error) {
	env := []string{}
	for _, s := range o.settings {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, nil, 0, fmt.Errorf("-setting %q is not key=value", s)
		}
		env = append(env, "GF_PLUGIN_"+strings.ToUpper(k)+"="+v)
	}
	env = append(env, grafanaEnv...)
	for _, k := range permittedHostEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	os.Clearenv()
	cmd := exec.Command(o.executable)
	cmd.Env = env
	cmd.Dir = "/"
	plugins := plugin.PluginSet{}
	for _, name := range grafanaPluginSet {
		plugins[name] = connPlugin{}
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 2, MagicCookieKey: "grafana_plugin_type", MagicCookieValue: "datasource"},
		VersionedPlugins: map[int]plugin.PluginSet{2: plugins},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Managed:          false,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: os.Stderr, Level: hclog.LevelFromString(o.logLevel)}),
	})
	protocol, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, 0, err
	}
	raw, err := protocol.Dispense("stream")
	if err != nil {
		client.Kill()
		return nil, nil, 0, err
	}
	return client, raw.(*grpc.ClientConn), client.ReattachConfig().Pid, nil
}

func waitWorkers(conn *grpc.ClientConn, pctx *pb.PluginContext, workers int) error {
	want := fmt.Sprintf("%d worker", workers)
	deadline := time.Now().Add(20 * time.Second)
	message := ""
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := pb.NewDiagnosticsClient(conn).CheckHealth(ctx, &pb.CheckHealthRequest{PluginContext: pctx})
		cancel()
		if err == nil {
			message = reply.Message
			if reply.Status == pb.CheckHealthResponse_OK && strings.Contains(message, want) {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the pipeline did not come up within 20 s: %s", message)
}

// drive opens every stream, records first packets, then the steady window.
func drive(o options, conn *grpc.ClientConn, pctx *pb.PluginContext, r *result) {
	streams := make([]*stream, o.count)
	for i := range streams {
		streams[i] = &stream{path: strings.ReplaceAll(o.pattern, "{i}", fmt.Sprint(i+1))}
	}
	streamClient, dataClient := pb.NewStreamClient(conn), pb.NewDataClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var windowStart, windowEnd atomic.Int64
	windowStart.Store(1 << 62)
	windowEnd.Store(1 << 62)
	tick := time.Duration(o.tickMs * float64(time.Millisecond))
	var firsts sync.WaitGroup
	firsts.Add(o.count)
	var done sync.WaitGroup
	gate := make(chan struct{}, o.gate)
	queried := make([]float64, o.count)
	cpu0, client0 := cpuSeconds(r.PluginPid), selfCPU()
	start := time.Now()
	subscribed := make(chan struct{})
	var subscribes sync.WaitGroup
	subscribes.Add(o.count)
	go func() { subscribes.Wait(); close(subscribed) }()
	for i, s := range streams {
		done.Add(1)
		go func(i int, s *stream) {
			defer done.Done()
			firstOnce := sync.Once{}
			first := func() { firstOnce.Do(firsts.Done) }
			defer first()
			var data []byte
			gate <- struct{}{}
			if o.queryHours > 0 {
				to := time.Now().Add(-time.Second) // the frontend's LIVE_MARGIN_MS
				from := to.Add(-time.Duration(o.queryHours * float64(time.Hour)))
				began := time.Now()
				if err := query(ctx, dataClient, pctx, s.path, from, to); err != nil {
					s.failed, s.message = "QueryData "+code(err), err.Error()
				}
				queried[i] = time.Since(began).Seconds()
				// The frontend's after is its frame's last row; the range's end is that row's millisecond or later.
				data = []byte(fmt.Sprintf(`{"after":%d}`, to.UnixMilli()))
			}
			if o.subscribe && s.failed == "" {
				req := &pb.SubscribeStreamRequest{PluginContext: pctx, Path: s.path, Data: data}
				reply, err := streamClient.SubscribeStream(ctx, req)
				if err != nil {
					s.failed, s.message = "SubscribeStream "+code(err), err.Error()
				} else if o.queryHours > 0 && len(decodeTimes(reply.Data)) > 0 { // a dashboard's panel (decoding costs the client CPU)
					s.shown = time.Now()
				}
			}
			<-gate
			subscribes.Done()
			if o.queryHours == 0 {
				<-subscribed // Grafana's order at a restart: every subscribe, then every RunStream
			}
			if s.failed != "" {
				return
			}
			s.called = time.Now()
			call, err := streamClient.RunStream(ctx, &pb.RunStreamRequest{PluginContext: pctx, Path: s.path})
			if err != nil {
				s.failed, s.message = "RunStream "+code(err), err.Error()
				return
			}
			for {
				packet, err := call.Recv()
				now := time.Now()
				if err != nil {
					if ctx.Err() == nil {
						s.failed, s.message = "RunStream "+code(err), err.Error()
						s.failedAt = now
					}
					return
				}
				if s.first.IsZero() {
					s.first = now
				}
				times := decodeTimes(packet.Data)
				if len(times) > 0 && s.live.IsZero() {
					s.live = now
					if s.shown.IsZero() {
						s.shown = now
					}
					first()
				}
				s.take(times, now, windowStart.Load(), windowEnd.Load(), tick)
			}
		}(i, s)
	}
	allFirst := make(chan struct{})
	go func() { firsts.Wait(); close(allFirst) }()
	select {
	case <-allFirst:
	case <-time.After(o.wait):
	}
	r.StartS = time.Since(start).Seconds()
	r.StartPluginCPU, r.StartClientCPU = cpuSeconds(r.PluginPid)-cpu0, selfCPU()-client0
	if o.window > 0 {
		time.Sleep(o.warmup)
		cpu1, client1 := cpuSeconds(r.PluginPid), selfCPU()
		opened := time.Now()
		windowStart.Store(opened.UnixNano())
		windowEnd.Store(opened.Add(o.window).UnixNano())
		fmt.Fprintln(os.Stderr, WindowOpen)
		time.Sleep(o.window)
		r.WindowS = time.Since(opened).Seconds()
		r.PluginCPU, r.ClientCPU = cpuSeconds(r.PluginPid)-cpu1, selfCPU()-client1
		if r.PluginPid > 0 {
			r.RssKiB = rssKiB(r.PluginPid)
		}
	}
	cancel()
	done.Wait()
	var latencies []float64
	var firstLate, lastLate int64
	closed := time.Unix(0, windowEnd.Load())
	for i, s := range streams {
		if s.failed != "" {
			r.Failed[s.failed]++
			r.Errors[s.failed] = s.message // one of them, to say what went wrong
			if !s.failedAt.IsZero() {
				r.FailedAtS = append(r.FailedAtS, s.failedAt.Sub(start).Seconds())
			}
		}
		if s.outOfOrder {
			r.OutOfOrder++
		}
		if s.live.IsZero() || s.live.Sub(start) > o.wait {
			r.Silent++
			r.FirstPacketS = append(r.FirstPacketS, -1)
			r.FromStartS = append(r.FromStartS, -1)
			r.FirstLiveRowS = append(r.FirstLiveRowS, -1)
			r.PanelFirstRowS = append(r.PanelFirstRowS, -1)
		} else {
			r.FirstPacketS = append(r.FirstPacketS, s.first.Sub(s.called).Seconds())
			r.FromStartS = append(r.FromStartS, s.first.Sub(start).Seconds())
			r.FirstLiveRowS = append(r.FirstLiveRowS, s.live.Sub(start).Seconds())
			r.PanelFirstRowS = append(r.PanelFirstRowS, s.shown.Sub(start).Seconds())
		}
		if o.queryHours > 0 {
			r.QueryDataS = append(r.QueryDataS, queried[i])
		}
		if o.window > 0 {
			r.Rows += s.rows
			r.Packets += s.packets
			latencies = append(latencies, s.latencies...)
			tail := closed.Sub(s.lastArrival) // the time since its last row, at the window's end
			if s.lastArrival.IsZero() {
				tail = closed.Sub(time.Unix(0, windowStart.Load()))
			}
			gap := s.maxGap
			if tail > gap {
				gap = tail
			}
			if s.firstLate != 0 && (firstLate == 0 || s.firstLate < firstLate) {
				firstLate = s.firstLate
			}
			if s.lastLate > lastLate {
				lastLate = s.lastLate
			}
			if gap > 2*tick || s.maxLateness > 2*tick {
				r.Late++
			}
		}
	}
	r.LateFromS, r.LateUntilS = -1, -1
	if lastLate != 0 {
		r.LateFromS = float64(firstLate-windowStart.Load()) / 1e9
		r.LateUntilS = float64(lastLate-windowStart.Load()) / 1e9
	}
	sort.Float64s(latencies)
	for _, q := range []float64{50, 99, 100} {
		if len(latencies) > 0 {
			at := int(q / 100 * float64(len(latencies)))
			if at >= len(latencies) {
				at = len(latencies) - 1
			}
			r.LatencyMs[fmt.Sprintf("p%g", q)] = latencies[at]
		}
	}
}

// take checks a packet's rows are after the last (strictly), and counts them in the window.
func (s *stream) take(times []int64, now time.Time, from, to int64, tick time.Duration) {
	for _, t := range times {
		if t <= s.lastNs {
			s.outOfOrder = true
		}
		s.lastNs = t
	}
	n := now.UnixNano()
	if n < from || n >= to || len(times) == 0 {
		return
	}
	s.packets++
	s.rows += len(times)
	previous := s.lastArrival
	if previous.IsZero() || previous.UnixNano() < from {
		previous = time.Unix(0, from)
	}
	if gap := now.Sub(previous); gap > s.maxGap {
		s.maxGap = gap
	}
	s.lastArrival = now
	for _, t := range times {
		late := time.Duration(n - t)
		s.latencies = append(s.latencies, float64(late)/1e6)
		if late > 2*tick {
			if s.firstLate == 0 {
				s.firstLate = n
			}
			s.lastLate = n
		}
		if late > s.maxLateness {
			s.maxLateness = late
		}
	}
}

// decodeTimes returns a data-frame JSON packet's row times in ns (none for a schema or notice only).
func decodeTimes(raw []byte) []int64 {
	var frame struct {
		Data *struct {
			Values []json.RawMessage `json:"values"`
			Nanos  []json.RawMessage `json:"nanos"`
		} `json:"data"`
	}
	if json.Unmarshal(raw, &frame) != nil || frame.Data == nil || len(frame.Data.Values) == 0 {
		return nil
	}
	var ms []int64
	if json.Unmarshal(frame.Data.Values[0], &ms) != nil {
		return nil
	}
	var extra []int64
	if len(frame.Data.Nanos) > 0 {
		_ = json.Unmarshal(frame.Data.Nanos[0], &extra) // null: whole milliseconds
	}
	times := make([]int64, len(ms))
	for i, t := range ms {
		times[i] = t * 1_000_000
		if i < len(extra) {
			times[i] += extra[i]
		}
	}
	return times
}

func query(ctx context.Context, c pb.DataClient, pctx *pb.PluginContext, path string, from, to time.Time) error {
	var lower, upper, tick float64
	if _, err := fmt.Sscanf(strings.ReplaceAll(path, "-", " "), "custom %g %g %g", &lower, &upper, &tick); err != nil {
		return fmt.Errorf("a dashboard needs custom-<lower>-<upper>-<tick> paths, got %q", path)
	}
	model, _ := json.Marshal(map[string]interface{}{
		"refId": "A", "lowerLimit": lower, "upperLimit": upper, "tickInterval": tick,
		"datasource": map[string]string{"type": "zmqstream-stream-datasource", "uid": "zmqstream-bench"},
		"intervalMs": 1000, "maxDataPoints": 1000,
	})
	req := &pb.QueryDataRequest{PluginContext: pctx, Queries: []*pb.DataQuery{{
		RefId: "A", MaxDataPoints: 1000, IntervalMS: 1000, Json: model,
		TimeRange: &pb.TimeRange{FromEpochMS: from.UnixMilli(), ToEpochMS: to.UnixMilli()},
	}}}
	reply, err := c.QueryData(ctx, req)
	if err != nil {
		return err
	}
	for _, answer := range reply.Responses {
		if answer.Error != "" {
			return fmt.Errorf("QueryData: %s", answer.Error)
		}
	}
	return nil
}

func code(err error) string { return status.Code(err).String() }

// cpuSeconds is a process's user + system CPU time from /proc (0 for no process).
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	var utime, stime float64
	fmt.Sscan(fields[11], &utime)
	fmt.Sscan(fields[12], &stime)
	return (utime + stime) / 100 // USER_HZ
}

func selfCPU() float64 {
	var u syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return float64(u.Utime.Nano()+u.Stime.Nano()) / 1e9
}

func rssKiB(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kib int
			fmt.Sscan(strings.Fields(line)[1], &kib)
			return kib
		}
	}
	return 0
}
