// The two other roles of this test binary, for the forwarding proof (issue 9):
//
//   coco-kata-securemount -serve-cdh SOCKET     a stand-in for the real CDH on
//       the upstream socket: api.GetResourceService/GetResource answers
//       "standin:" + path + bytes 0x00 0xff 0x80 (binary, to catch any
//       re-encoding); a path containing "deny" is PERMISSION_DENIED.
//   coco-kata-securemount -get-resource URI     what kata-agent or a workload
//       asks the CDH on cdh.sock; prints "resource: <hex>" or "error: CODE MSG".
package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GetResourceRequest / GetResourceResponse as guest-components' api.proto.
type GetResourceRequest struct {
	ResourcePath string `protobuf:"bytes,1,opt,name=ResourcePath,proto3"`
}

func (m *GetResourceRequest) Reset()         { *m = GetResourceRequest{} }
func (m *GetResourceRequest) String() string { return proto.CompactTextString(m) }
func (*GetResourceRequest) ProtoMessage()    {}

type GetResourceResponse struct {
	Resource []byte `protobuf:"bytes,1,opt,name=Resource,proto3"`
}

func (m *GetResourceResponse) Reset()         { *m = GetResourceResponse{} }
func (m *GetResourceResponse) String() string { return proto.CompactTextString(m) }
func (*GetResourceResponse) ProtoMessage()    {}

func serveCdh(socket string) {
	_ = os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		fmt.Printf("error: listen %v\n", err)
		os.Exit(1)
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		fmt.Printf("error: server %v\n", err)
		os.Exit(1)
	}
	s.Register("api.GetResourceService", map[string]ttrpc.Method{
		"GetResource": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req GetResourceRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			if strings.Contains(req.ResourcePath, "deny") {
				return nil, status.Errorf(codes.PermissionDenied, "stand-in CDH says no to %s", req.ResourcePath)
			}
			return &GetResourceResponse{Resource: append([]byte("standin:"+req.ResourcePath), 0x00, 0xff, 0x80)}, nil
		},
	})
	fmt.Println("serving")
	if err := s.Serve(context.Background(), l); err != nil {
		fmt.Printf("error: serve %v\n", err)
		os.Exit(1)
	}
}

func getResource(socket, uri string, timeout time.Duration) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		fmt.Printf("error: 14 %v\n", err)
		os.Exit(14)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var resp GetResourceResponse
	if err := client.Call(ctx, "api.GetResourceService", "GetResource", &GetResourceRequest{ResourcePath: uri}, &resp); err != nil {
		st, _ := status.FromError(err)
		fmt.Printf("error: %d %s\n", int(st.Code()), st.Message())
		os.Exit(int(st.Code()))
	}
	fmt.Printf("resource: %s\n", hex.EncodeToString(resp.Resource))
}
