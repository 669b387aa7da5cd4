#include <tessera/runtime/train_command.h>

#include <tessera/core/data.h>
#include <tessera/runtime/models.h>
#include <tessera/runtime/trainer.h>

#include <oneapi/tbb/global_control.h>

#include <cstdlib>
#include <iostream>
#include <memory>

namespace tessera {

const char* kTrainUsage =
    "usage: tessera train [options]\n"
    "  --model NAME           mlp | cnn (default cnn)\n"
    "  --precision P          fp32 | bf16 | cfp8 (default bf16)\n"
    "  --epochs N             (default 1)\n"
    "  --batch-size B         (default 64)\n"
    "  --lr LR                learning rate (default 0.05)\n"
    "  --optimizer O          sgd | adamw (default sgd)\n"
    "  --momentum M           SGD momentum (default 0.9)\n"
    "  --nesterov             Nesterov momentum\n"
    "  --weight-decay WD      (default 0)\n"
    "  --schedule S           constant | step | cosine (default constant)\n"
    "  --warmup N             linear warmup steps (default 0)\n"
    "  --clip NORM            global gradient-norm clipping (default off)\n"
    "  --seed S               (default 1)\n"
    "  --checkpoint DIR       save a checkpoint after every epoch\n"
    "  --resume               continue from DIR's checkpoint\n"
    "  --metrics FILE         write JSON lines (steps and epochs)\n"
    "  --data DIR             Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
    "  --max-steps N          stop after N steps in total\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --cfp8-rounding R      nearest | stochastic (cfp8 operands; default nearest)\n"
    "  --cfp8-margin M        headroom in powers of two above the amax history (default 0)\n"
    "  --no-loss-scaling      disable dynamic loss scaling for bf16 / cfp8\n"
    "  --no-progress          no progress bar\n";

namespace {

struct Args {
  const std::vector<std::string>& v;
  size_t i = 0;
  std::string value(const std::string& flag) {
    if (i + 1 >= v.size()) throw ValueError("option " + flag + " needs a value");
    return v[++i];
  }
};

int64_t to_int(const std::string& flag, const std::string& s, int64_t lo) {
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  TESSERA_CHECK(!s.empty() && *end == '\0' && v >= lo, "option ", flag, ": '", s, "' is not an integer >= ", lo);
  return v;
}
double to_double(const std::string& flag, const std::string& s, double lo) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  TESSERA_CHECK(!s.empty() && *end == '\0' && v >= lo, "option ", flag, ": '", s, "' is not a number >= ", lo);
  return v;
}

}  // namespace

int train_command(const std::vector<std::string>& argv) {
  TrainOptions o;
  o.model = "cnn";
  o.precision = Precision::bf16;
  o.opt.lr = 0.05;
  o.opt.momentum = 0.9;
  std::string data_dir = kFashionMnistDir;
  int64_t threads = 0;
  try {
    Args a{argv};
    for (; a.i < argv.size(); ++a.i) {
      const std::string& f = argv[a.i];
      if (f == "--model") o.model = a.value(f);
      else if (f == "--precision") o.precision = precision_from_name(a.value(f));
      else if (f == "--epochs") o.epochs = to_int(f, a.value(f), 0);
      else if (f == "--batch-size") o.batch_size = to_int(f, a.value(f), 1);
      else if (f == "--lr") o.opt.lr = to_double(f, a.value(f), 0);
      else if (f == "--optimizer") o.optimizer = a.value(f);
      else if (f == "--momentum") o.opt.momentum = to_double(f, a.value(f), 0);
      else if (f == "--nesterov") o.opt.nesterov = true;
      else if (f == "--weight-decay") o.opt.weight_decay = to_double(f, a.value(f), 0);
      else if (f == "--schedule") o.schedule = a.value(f);
      else if (f == "--warmup") o.warmup_steps = to_int(f, a.value(f), 0);
      else if (f == "--clip") o.clip_norm = to_double(f, a.value(f), 0);
      else if (f == "--seed") o.seed = static_cast<uint64_t>(to_int(f, a.value(f), 0));
      else if (f == "--checkpoint") o.checkpoint_dir = a.value(f);
      else if (f == "--resume") o.resume = true;
      else if (f == "--metrics") o.metrics_path = a.value(f);
      else if (f == "--data") data_dir = a.value(f);
      else if (f == "--max-steps") o.max_steps = to_int(f, a.value(f), 0);
      else if (f == "--threads") threads = to_int(f, a.value(f), 1);
      else if (f == "--no-progress") o.progress = false;
      else if (f == "--no-loss-scaling") o.loss_scaling = false;
      else if (f == "--cfp8-margin") o.cfp8.margin = static_cast<int>(to_int(f, a.value(f), 0));
      else if (f == "--cfp8-rounding") {
        std::string r = a.value(f);
        TESSERA_CHECK(r == "nearest" || r == "stochastic", "option --cfp8-rounding: '", r,
                      "' is not nearest or stochastic");
        o.cfp8.rounding = r == "nearest" ? Rounding::nearest_even : Rounding::stochastic;
      }
      else if (f == "--help" || f == "-h") {
        std::cout << kTrainUsage;
        return 0;
      } else {
        std::cerr << "tessera train: unknown option '" << f << "'\n\n" << kTrainUsage;
        return 2;
      }
    }
    models::make_model(o.model, 0);  // validates the name up front
    lr_schedule_from_name(o.schedule);
    if (o.optimizer == "adamw" && o.opt.momentum == 0.9) o.opt.momentum = 0;  // momentum is SGD's
  } catch (const ValueError& e) {
    std::cerr << "tessera train: " << e.what() << "\n";
    return 2;
  }
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) {
    limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  }
  std::cout << "loading Fashion-MNIST from " << data_dir << "\n";
  Dataset train = load_fashion_mnist(data_dir, Split::train);
  Dataset test = load_fashion_mnist(data_dir, Split::test);
  std::cout << "training " << o.model << " in " << precision_name(o.precision) << ": " << train.size()
            << " training / " << test.size() << " test images, batch " << o.batch_size << ", " << o.optimizer
            << " lr " << o.opt.lr << ", " << o.epochs << " epoch(s)\n";
  Trainer t(models::make_model(o.model, o.seed), {28, 28, 1}, 10, o);
  auto reports = t.fit(train, test, std::cout);
  if (!reports.empty()) {
    double best = 0, ips = 0;
    for (const auto& r : reports) {
      best = std::max(best, r.test_accuracy);
      ips += r.images_per_s;
    }
    std::cout << "done: " << t.global_step() << " steps, final test accuracy "
              << 100 * reports.back().test_accuracy << "%, best " << 100 * best << "%, mean "
              << static_cast<int64_t>(ips / reports.size()) << " images/s";
    if (t.skipped_steps()) std::cout << ", " << t.skipped_steps() << " steps skipped by loss scaling";
    std::cout << "\npeak intermediate memory per step: " << t.train_executor().peak_bytes() / (1 << 20)
              << " MiB\ntime per op kind (training):\n" << t.train_executor().stats_table();
  }
  return 0;
}

}  // namespace tessera
