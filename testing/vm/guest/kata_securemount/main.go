// coco-kata-securemount: makes the Confidential Data Hub call an unmodified
// kata-agent makes for an ephemeral block storage (block_handler.rs), with
// the real containerd/ttrpc Go client, from inside the test guest. Test
// scaffolding for the VM suite (the guest has no kata-agent).
//
//   coco-kata-securemount -device MAJ:MIN -mount-point DIR [-integrity true|false]
//                         [-mkfs "-O ^has_journal -m 0 -i 163840 -I 128"] [-fs ext4]
//                         [-socket /run/confidential-containers/cdh.sock] [-timeout 50s]
//
// Prints "ok" or "error: CODE MESSAGE"; exits 0 or with the gRPC code.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"google.golang.org/grpc/status"
)

// SecureMountRequest as guest-components' confidential-data-hub api.proto
// defines it (package api).
type SecureMountRequest struct {
	VolumeType string            `protobuf:"bytes,1,opt,name=volume_type,json=volumeType,proto3"`
	Options    map[string]string `protobuf:"bytes,2,rep,name=options,proto3" protobuf_key:"bytes,1,opt,name=key,proto3" protobuf_val:"bytes,2,opt,name=value,proto3"`
	Flags      []string          `protobuf:"bytes,3,rep,name=flags,proto3"`
	MountPoint string            `protobuf:"bytes,4,opt,name=mount_point,json=mountPoint,proto3"`
}

func (m *SecureMountRequest) Reset()         { *m = SecureMountRequest{} }
func (m *SecureMountRequest) String() string { return proto.CompactTextString(m) }
func (*SecureMountRequest) ProtoMessage()    {}

type SecureMountResponse struct{}

func (m *SecureMountResponse) Reset()         { *m = SecureMountResponse{} }
func (m *SecureMountResponse) String() string { return proto.CompactTextString(m) }
func (*SecureMountResponse) ProtoMessage()    {}

func main() {
	socket := flag.String("socket", "/run/confidential-containers/cdh.sock", "CDH socket")
	device := flag.String("device", "", "MAJ:MIN of the hot-plugged disk")
	mountPoint := flag.String("mount-point", "", "where kata-agent wants the file system")
	integrity := flag.String("integrity", "true", "agent.secure_storage_integrity")
	mkfs := flag.String("mkfs", "-O ^has_journal -m 0 -i 163840 -I 128", "mkfsOpts")
	fs := flag.String("fs", "ext4", "filesystemType")
	timeout := flag.Duration("timeout", 50*time.Second, "agent.cdh_api_timeout")
	serve := flag.String("serve-cdh", "", "act as a stand-in CDH on this socket (cdh_standin.go)")
	resource := flag.String("get-resource", "", "call api.GetResourceService/GetResource for this URI instead")
	flag.Parse()
	if *serve != "" {
		serveCdh(*serve)
		return
	}
	if *resource != "" {
		getResource(*socket, *resource, *timeout)
		return
	}

	conn, err := net.Dial("unix", *socket)
	if err != nil {
		fmt.Printf("error: 14 %v\n", err)
		os.Exit(14)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	// kata-agent creates the mount point first.
	if err := os.MkdirAll(*mountPoint, 0o755); err != nil {
		fmt.Printf("error: 13 mkdir %v\n", err)
		os.Exit(13)
	}
	req := &SecureMountRequest{
		VolumeType: "block-device",
		Options: map[string]string{
			"deviceId":       *device,
			"sourceType":     "empty",
			"targetType":     "fileSystem",
			"filesystemType": *fs,
			"mkfsOpts":       *mkfs,
			"encryptionType": "luks2",
			"dataIntegrity":  *integrity,
		},
		Flags:      []string{},
		MountPoint: *mountPoint,
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := client.Call(ctx, "api.SecureMountService", "SecureMount", req, &SecureMountResponse{}); err != nil {
		st, _ := status.FromError(err)
		fmt.Printf("error: %d %s\n", int(st.Code()), st.Message())
		os.Exit(int(st.Code()))
	}
	fmt.Println("ok")
}
