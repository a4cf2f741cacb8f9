package main

// The chaos run's burst of stream opens (bench/chaos/burst.py says what it is for): every path of
// a file opened at once, each subscribed then run, its first packet awaited, read on for a while,
// cancelled. The raw figures per path, in the file's order, go to bench/chaos/burst.py, which
// judges them as it judges its Python client's.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "zsbench/pluginv2"
)

type burstResult struct {
	Client       string    `json:"client"`
	FirstPacketS []float64 `json:"first_packet_s"` // from the burst's start; -1: none within -wait
	ErrorNotice  []bool    `json:"error_notice"`   // the first packet is an error notice (a refusal)
	Code         []int     `json:"code"`           // the gRPC status the call ended with while read (0: none)
	TookS        float64   `json:"took_s"`
}

// burstPaths reads the file's paths, one a line (blank lines aside).
func burstPaths(file string) ([]string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			paths = append(paths, line)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("-burst %s holds no path: write one channel path a line", file)
	}
	return paths, nil
}

// burst opens every path at once; each waits o.wait for its first packet, then is read for o.burstRead.
func burst(o options, conn *grpc.ClientConn, pctx *pb.PluginContext, paths []string) burstResult {
	n := len(paths)
	r := burstResult{FirstPacketS: make([]float64, n), ErrorNotice: make([]bool, n), Code: make([]int, n)}
	client := pb.NewStreamClient(conn)
	start := time.Now()
	var done sync.WaitGroup
	for i, path := range paths {
		done.Add(1)
		go func(i int, path string) {
			defer done.Done()
			first, notice, code := openOne(o, client, pctx, path)
			r.FirstPacketS[i], r.ErrorNotice[i], r.Code[i] = -1, notice, code
			if !first.IsZero() {
				r.FirstPacketS[i] = first.Sub(start).Seconds()
			}
		}(i, path)
	}
	done.Wait()
	r.TookS = time.Since(start).Seconds()
	return r
}

// openOne is one panel's open: when its first packet came (zero: none), whether that was an error
// notice, and the status code the call ended with while it was read (0 if it did not end).
func openOne(o options, client pb.StreamClient, pctx *pb.PluginContext, path string) (time.Time, bool, int) {
	subscribing, cancel := context.WithTimeout(context.Background(), o.wait)
	_, _ = client.SubscribeStream(subscribing, &pb.SubscribeStreamRequest{PluginContext: pctx, Path: path})
	cancel() // a refusal here is told again by RunStream, which the panel runs anyway
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	call, err := client.RunStream(ctx, &pb.RunStreamRequest{PluginContext: pctx, Path: path})
	if err != nil {
		return time.Time{}, false, int(status.Code(err))
	}
	packets, ended := make(chan []byte), make(chan error, 1)
	go func() {
		for {
			packet, err := call.Recv()
			if err != nil {
				ended <- err
				return
			}
			select {
			case packets <- packet.Data:
			case <-ctx.Done():
				return
			}
		}
	}()
	var first time.Time
	notice := false
	deadline := time.NewTimer(o.wait)
	defer deadline.Stop()
	for {
		select {
		case data := <-packets:
			if first.IsZero() {
				first, notice = time.Now(), strings.Contains(string(data), `"severity":"error"`)
				if !deadline.Stop() {
					<-deadline.C
				}
				deadline.Reset(o.burstRead)
			}
		case err := <-ended:
			if errors.Is(err, io.EOF) {
				return first, notice, 0 // ended with OK
			}
			return first, notice, int(status.Code(err))
		case <-deadline.C:
			return first, notice, 0
		}
	}
}
