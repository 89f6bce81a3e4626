// cocostorage-policy: pod YAML (+ PVCs, StorageClasses) -> the attested
// storage policy, the init-data that carries it, its digest, the
// cc_init_data annotation value and the Rego additions for kata-agent's
// policy. Usage and every decision: docs/policy-generator.md.
// Exit codes: 0 written; 2 the input or the options cannot give an exact
// policy (message on stderr); 1 I/O or internal error.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cocostorage/common/cli.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "init_data_writer.h"
#include "k8s_input.h"
#include "policy/storage_policy.h"
#include "policy_builder.h"
#include "rego.h"

namespace cocostorage::policygen {
namespace {

int ExitCodeFor(const Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kFailedPrecondition ? 2 : 1;
}

int Fail(const Status& s) {
  std::cerr << "cocostorage-policy: " << s.message() << "\n";
  return ExitCodeFor(s);
}

struct Outputs {
  std::string dir, policy, init_data, digest, annotation, rego;
  // Fills the unset paths from --out; true when at least one is set.
  bool Resolve() {
    if (!dir.empty()) {
      auto in_dir = [&](std::string& p, const char* name) {
        if (p.empty()) p = Cat(dir, "/", name);
      };
      in_dir(policy, "cocostorage.toml");
      in_dir(init_data, "initdata.toml");
      in_dir(digest, "initdata.digest");
      in_dir(annotation, "cc_init_data.annotation");
      in_dir(rego, "cocostorage.rego");
    }
    return !policy.empty() || !init_data.empty() || !digest.empty() || !annotation.empty() || !rego.empty();
  }
};

Status WriteIfSet(const std::string& path, std::string_view content) {
  if (path.empty()) return OkStatus();
  Status s = AtomicWriteFile(path, content, 0644);  // nothing here is secret
  return s.ok() ? s : Annotate(s, Cat("writing ", path));
}

int Run(int argc, char** argv) {
  CLI::App app{
      "Generates the cocostorage storage policy, its init-data, digest, annotation and Rego additions "
      "for one pod (docs/policy-generator.md)",
      "cocostorage-policy"};
  std::vector<std::string> inputs;
  GeneratorOptions opt;
  Outputs out;
  std::string tee, init_data_in, create = "never";
  std::vector<std::string> pv_names;
  int64_t ordinal = -1;
  bool replace = false;
  app.add_option("inputs", inputs, "Kubernetes YAML files (multi-document)")->required()->check(CLI::ExistingFile);
  app.add_option("--tee", tee, "snp (sha256, HOST_DATA) or tdx (sha384, MRCONFIGID); required without --init-data");
  app.add_option("--init-data", init_data_in, "existing init-data TOML to merge into (kept byte-identical)")
      ->check(CLI::ExistingFile);
  app.add_flag("--replace", replace, "replace a cocostorage.toml already in --init-data");
  app.add_option("--out", out.dir,
                 "directory for all outputs (cocostorage.toml, initdata.toml, initdata.digest, "
                 "cc_init_data.annotation, cocostorage.rego)");
  app.add_option("--policy-out", out.policy, "write the storage policy here");
  app.add_option("--init-data-out", out.init_data, "write the init-data here");
  app.add_option("--digest-out", out.digest, "write the init-data digest (hex) here");
  app.add_option("--annotation-out", out.annotation, "write the cc_init_data annotation value here");
  app.add_option("--rego-out", out.rego, "write the Rego additions here");
  app.add_option("--pod", opt.workload_name, "the workload to generate for, when the input holds several");
  app.add_option("--namespace", opt.default_namespace, "namespace of objects that name none");
  app.add_option("--ordinal", ordinal, "StatefulSet replica ordinal (its claims are <template>-<name>-<ordinal>)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pv-name", pv_names, "CLAIM=PV: the PV bound to CLAIM, for kbsResourceUri's ${pv.name}");
  app.add_option("--policy-version", opt.policy_version, "policy_version (>= 1; raise it with every change)")
      ->check(CLI::Range(1u, 0xffffffffu));
  app.add_option("--workload", opt.workload_label, "workload label in the policy (default <namespace>/<pod>)");
  app.add_option("--create", create, "persistent volumes: never (default) or if-blank (first deployment)")
      ->check(CLI::IsMember({"never", "if-blank"}));
  app.add_option("--blank-device", opt.blank_device,
                 "how an ambiguous blank SecureMount device is resolved: deny (default), ephemeral or a volume id");
  app.add_flag("--allow-permutation", opt.allow_permutation,
               "accept two or more persistent volumes on the secure-mount route (design R1)");
  app.add_flag("--allow-empty", opt.allow_empty, "emit a policy that admits no volume for a pod with none of ours");
  app.add_option("--driver-name", opt.driver_name, "our CSI driver's name")->default_str(opt.driver_name);
  if (auto rc = ParseCommandLine(app, argc, argv)) return *rc;

  if (!out.Resolve()) return Fail(absl::InvalidArgumentError("nothing to write: pass --out DIR or an --*-out flag"));
  if (tee.empty() && init_data_in.empty()) {
    return Fail(absl::InvalidArgumentError("pass --tee snp|tdx (or --init-data to take its algorithm)"));
  }
  if (replace && init_data_in.empty()) return Fail(absl::InvalidArgumentError("--replace needs --init-data"));
  if (ordinal >= 0) opt.ordinal = ordinal;
  opt.create = create == "if-blank" ? agent::policy::CreateRule::kIfBlank : agent::policy::CreateRule::kNever;
  for (const std::string& p : pv_names) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == p.size()) {
      return Fail(absl::InvalidArgumentError(Cat("--pv-name ", p, ": want CLAIM=PV")));
    }
    opt.pv_names[p.substr(0, eq)] = p.substr(eq + 1);
  }

  K8sInputs k8s;
  for (const std::string& path : inputs) {
    auto text = ReadFileToString(path, 16 << 20);
    if (!text.ok()) return Fail(Annotate(text.status(), path));
    if (Status s = ParseK8sYaml(*text, path, &k8s); !s.ok()) return Fail(s);
  }
  auto generated = BuildStoragePolicy(k8s, opt);
  if (!generated.ok()) return Fail(generated.status());
  for (const std::string& w : generated->warnings) std::cerr << "cocostorage-policy: warning: " << w << "\n";

  const std::string policy_toml = agent::policy::SerializeStoragePolicy(generated->policy);
  // Never hand out a policy the agent would refuse (or read differently).
  auto reparsed = agent::policy::ParseStoragePolicy(policy_toml);
  if (!reparsed.ok()) {
    return Fail(absl::InternalError(Cat("the generated policy does not parse: ", reparsed.status().message())));
  }
  if (!(*reparsed == generated->policy)) {
    return Fail(absl::InternalError("the generated policy does not read back identically"));
  }

  std::optional<std::string> algorithm;
  if (!tee.empty()) {
    auto a = AlgorithmForTee(tee);
    if (!a.ok()) return Fail(a.status());
    algorithm = *a;
  }
  StatusOr<std::string> init_data = absl::UnknownError("unset");
  if (init_data_in.empty()) {
    init_data = BuildInitData(policy_toml, *algorithm);
  } else {
    auto existing = ReadFileToString(init_data_in, (1 << 20) + 1);
    if (!existing.ok()) return Fail(Annotate(existing.status(), init_data_in));
    init_data = MergeInitData(*existing, policy_toml, algorithm, replace);
  }
  if (!init_data.ok()) return Fail(init_data.status());
  auto digest = InitDataDigestHex(*init_data);
  if (!digest.ok()) return Fail(digest.status());
  auto annotation = InitDataAnnotationValue(*init_data);
  if (!annotation.ok()) return Fail(annotation.status());
  const std::string rego = GenerateRego(*generated);

  if (!out.dir.empty()) {
    if (Status s = MakeDirs(out.dir, 0755); !s.ok()) return Fail(Annotate(s, out.dir));
  }
  for (const auto& [path, content] :
       std::vector<std::pair<std::string, std::string>>{{out.policy, policy_toml},
                                                        {out.init_data, *init_data},
                                                        {out.digest, Cat(*digest, "\n")},
                                                        {out.annotation, Cat(*annotation, "\n")},
                                                        {out.rego, rego}}) {
    if (Status s = WriteIfSet(path, content); !s.ok()) return Fail(s);
  }
  std::cout << "init-data digest: " << *digest << "\n";
  return 0;
}

}  // namespace
}  // namespace cocostorage::policygen

int main(int argc, char** argv) {
  try {
    return cocostorage::policygen::Run(argc, argv);
  } catch (const std::exception& e) {  // nothing is expected to throw; say so rather than abort
    std::cerr << "cocostorage-policy: internal error: " << e.what() << "\n";
    return 1;
  }
}
