// CSI Node service. Stage records the staging (and maps an RBD image); publish hands the volume
// to Kata by writing a direct-volume mountInfo.json and creates the kubelet
// target path (never a mount). Inline ephemeral volumes are created on publish
// and destroyed on unpublish.
#pragma once

#include <utility>

#include "csi/v1/csi.grpc.pb.h"
#include "csi_util.h"
#include "driver.h"

namespace cocostorage::csi {

class NodeService final : public ::csi::v1::Node::Service {
 public:
  explicit NodeService(NodeDeps d) : d_(std::move(d)) {}

  grpc::Status NodeStageVolume(grpc::ServerContext*, const ::csi::v1::NodeStageVolumeRequest*,
                               ::csi::v1::NodeStageVolumeResponse*) override;
  grpc::Status NodeUnstageVolume(grpc::ServerContext*, const ::csi::v1::NodeUnstageVolumeRequest*,
                                 ::csi::v1::NodeUnstageVolumeResponse*) override;
  grpc::Status NodePublishVolume(grpc::ServerContext*, const ::csi::v1::NodePublishVolumeRequest*,
                                 ::csi::v1::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*, const ::csi::v1::NodeUnpublishVolumeRequest*,
                                   ::csi::v1::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext*, const ::csi::v1::NodeGetVolumeStatsRequest*,
                                  ::csi::v1::NodeGetVolumeStatsResponse*) override;
  grpc::Status NodeExpandVolume(grpc::ServerContext*, const ::csi::v1::NodeExpandVolumeRequest*,
                                ::csi::v1::NodeExpandVolumeResponse*) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext*, const ::csi::v1::NodeGetCapabilitiesRequest*,
                                   ::csi::v1::NodeGetCapabilitiesResponse*) override;
  grpc::Status NodeGetInfo(grpc::ServerContext*, const ::csi::v1::NodeGetInfoRequest*,
                           ::csi::v1::NodeGetInfoResponse*) override;

 private:
  Status DoStage(const ::csi::v1::NodeStageVolumeRequest& req);
  Status DoUnstage(const ::csi::v1::NodeUnstageVolumeRequest& req);
  Status DoPublish(const ::csi::v1::NodePublishVolumeRequest& req);
  Status DoUnpublish(const ::csi::v1::NodeUnpublishVolumeRequest& req);
  Status DoStats(const ::csi::v1::NodeGetVolumeStatsRequest& req, ::csi::v1::NodeGetVolumeStatsResponse* resp);
  Status DoExpand(const ::csi::v1::NodeExpandVolumeRequest& req, ::csi::v1::NodeExpandVolumeResponse* resp);
  // The node-side record of a cluster volume this node did not create (RBD).
  StatusOr<VolumeRecord> AttachedOnlyRecord(const ::csi::v1::NodeStageVolumeRequest& req, const Capability& cap);

  NodeDeps d_;
};

}  // namespace cocostorage::csi
