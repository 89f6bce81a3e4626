// The real containerd/ttrpc Go client (Debian's golang-github-containerd-ttrpc-dev)
// against our C++ server: one connection, the calls kata-agent makes in shape
// (unary, timeout_nano, metadata), concurrent streams, status codes.
// Usage: goclient SOCKET. Prints one line per check; exit 0 when all hold.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Msg is wire-compatible with google.protobuf.StringValue (field 1, string).
type Msg struct {
	Value string `protobuf:"bytes,1,opt,name=value,proto3" json:"value,omitempty"`
}

func (m *Msg) Reset()         { *m = Msg{} }
func (m *Msg) String() string { return proto.CompactTextString(m) }
func (*Msg) ProtoMessage()    {}

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	conn, err := net.Dial("unix", os.Args[1])
	if err != nil {
		fail("dial: %v", err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()

	call := func(timeout time.Duration, service, method, value string) (*Msg, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		ctx = ttrpc.WithMetadata(ctx, ttrpc.MD{"origin": []string{"go"}})
		resp := &Msg{}
		err := client.Call(ctx, service, method, &Msg{Value: value}, resp)
		return resp, err
	}

	resp, err := call(5*time.Second, "test.Echo", "Echo", "hello from go")
	if err != nil || resp.Value != "hello from go" {
		fail("echo: %v %q", err, resp.Value)
	}
	fmt.Println("ok echo")

	if _, err := call(5*time.Second, "test.Echo", "Fail", ""); status.Code(err) != codes.NotFound {
		fail("status mapping: want NotFound, got %v", err)
	}
	fmt.Println("ok status")

	if _, err := call(5*time.Second, "test.Nope", "Nope", ""); status.Code(err) != codes.Unimplemented {
		fail("unknown service: want Unimplemented, got %v", err)
	}
	fmt.Println("ok unknown service")

	resp, err = call(5*time.Second, "test.Echo", "Metadata", "")
	if err != nil || resp.Value != "origin=go;" {
		fail("metadata: %v %q", err, resp.Value)
	}
	fmt.Println("ok metadata")

	// The server sees the context's deadline as timeout_nano: it reports the
	// time it has left, in milliseconds.
	resp, err = call(2*time.Second, "test.Echo", "Deadline", "")
	var left int
	if err != nil || func() bool { _, e := fmt.Sscanf(resp.Value, "%d", &left); return e != nil }() || left < 1000 || left > 2000 {
		fail("deadline seen by the server: %v %q", err, resp.Value)
	}
	fmt.Println("ok timeout_nano")
	// A call that outlives its deadline ends with DEADLINE_EXCEEDED (the
	// server's, or the client's own context).
	start := time.Now()
	if _, err := call(300*time.Millisecond, "test.Echo", "WaitForCancel", ""); status.Code(err) != codes.DeadlineExceeded && err != context.DeadlineExceeded {
		fail("deadline: want DeadlineExceeded, got %v", err)
	}
	if time.Since(start) > 3*time.Second {
		fail("deadline took %v", time.Since(start))
	}
	fmt.Println("ok deadline")

	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("stream %d", i)
			resp, err := call(10*time.Second, "test.Echo", "Slow", want)
			if err != nil || resp.Value != want {
				errs <- fmt.Sprintf("%d: %v %q", i, err, resp.Value)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		fail("concurrent: %s", e)
	}
	fmt.Println("ok concurrent")
	fmt.Println("PASS")
}
