"""Every default of gio_ada_jax, one comment each. Other configs start from this one.

It lives in the package because the library's own programs start from it (the default config
of `python -m gio_ada_jax.data.prepare` and `python -m gio_ada_jax.interop.parity`, and the base
of the demo's); configs/default.py is this file for the command line (`--config configs/default.py`).
"""

import ml_collections

from gio_ada_jax import variants
from gio_ada_jax.configs import procedural


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The paper's settings (section 3.5) on Virtual KITTI -> KITTI; `variant` "INPUT,OUTPUT"
  (`--config configs/default.py:gd,joint`) replaces config.variant."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter initialisation, data order and augmentation.
  # The ablation, "INPUT,OUTPUT" (gio_ada_jax/variants.py; `--config FILE.py:INPUT,OUTPUT`).
  # INPUT, paper Table 2: "na" (no transform net: the task net trains on raw source images),
  # "gd" (transform net on the image only, guided by the task loss), "+d" (image + depth),
  # "+s" (image + one-hot labels), "+sd" (both), "cg" (a CycleGAN, config.cyclegan, is trained
  # first and translates the source set; the task net then trains on the translations as in
  # "na"). OUTPUT, paper Table 3: "na" (no output discriminator), "ss" (softmax of the
  # segmentation), "depth" (predicted depth), "sep" (one discriminator each), "joint" (one
  # discriminator on softmax ⊕ depth, C + 1 channels). "+sd,joint" is the paper's final model.
  config.variant = "+sd,joint"

  data = config.data = ml_collections.ConfigDict()
  data.data_dir = "~/tensorflow_datasets"  # Where prepare writes and the pipeline reads.
  data.source = "vkitti"  # Prepared source dataset (labels and depth).
  data.target = "kitti_semantics"  # Prepared target dataset (its train split is unlabeled).
  # Root of the prepared source when it is not data.data_dir: the 'cg' variant points it at
  # the CycleGAN-translated copy it writes (WORKDIR/cyclegan/translated); "" = data.data_dir.
  data.source_data_dir = ""
  data.target_eval_split = "validation"  # KITTI's labelled training images, as in the paper.
  data.height = 375  # Network input height (KITTI).
  data.width = 1242  # Network input width.
  data.mode = "resize"  # "resize" to height x width, or "random_crop" a window of that size.
  data.random_flip = True  # Horizontal flip of image, label and depth together (paper).
  # The depth of the sky (the datasets' far clip, 655.35 m): "far" makes it the far end of the
  # [0, 1] depth range in G_img's input and in L_depth (the paper normalises depth "among all
  # images" and relies on "the sky is always far away"); "invalid" leaves it out of both, as
  # data version 1 did. Evaluation scores measured depth only, never the far clip.
  data.sky_depth = "far"
  # Source images per step over all devices, and as many target images (the paper: 1 + 1); split
  # evenly over the devices, so it must be a multiple of their number. The learning rate does
  # not scale with it (docs/paper_to_code.md says what changes with a larger batch).
  data.global_batch = 1
  # Training batches copied to the devices ahead of the step that uses them (host preprocessing
  # and the copy overlap the previous steps).
  data.device_prefetch = 2
  # Host threads that read and preprocess training batches (per domain), and how many finished
  # batches they may hold (bench/input_pipeline.py measures the rate).
  data.read_threads = 16
  data.read_buffer_batches = 32
  # The procedural sim-to-real benchmark: scene distribution, camera and both appearance
  # domains (gio_ada_jax/configs/procedural.py documents every field).
  data.procedural = procedural.procedural_config()

  train = config.train = ml_collections.ConfigDict()
  train.lambda_depth = 0.1  # Weight of the L1 depth loss (paper 3.5).
  train.lambda_input = 0.1  # Weight of the input-level adversarial loss (paper 3.5).
  train.lambda_output = 0.001  # Weight of the output-level adversarial loss (paper 3.5).
  train.gan_loss = "bce"  # "bce" (the paper's log-likelihood GAN) or "lsgan" (least squares).
  train.learning_rate = 2e-4  # Adam, every network (paper 3.5).
  train.lr_schedule = "constant"  # "constant" or "poly" (base * (1 - step / num_steps)^power).
  train.poly_power = 0.9  # Exponent of the poly schedule (AdaptSegNet).
  # The training length, given once: epochs of the prepared source split (the paper: "trained
  # for 10 epochs"; steps = ceil(epochs * source images / data.global_batch), printed at start)
  # or steps (then num_epochs = 0). The end of the poly schedule.
  train.num_epochs = 10.0
  train.num_steps = 0
  # Adam betas per network: CycleGAN's for the transform net and its discriminator,
  # PyTorch's defaults for the task net, AdaptSegNet's for the output discriminator.
  train.generator_betas = (0.5, 0.999)
  train.task_net_betas = (0.9, 0.999)
  train.d_img_betas = (0.5, 0.999)
  train.d_out_betas = (0.9, 0.99)
  train.adam_eps = 1e-8  # Adam epsilon (PyTorch's and optax's default).
  train.log_every = 50  # Steps between console lines (losses, steps/s, images/s, ETA); >= 1.
  train.checkpoint_every = 1000  # Steps between checkpoints (and one at the end); >= 1.
  train.keep_checkpoints = 3  # How many recent checkpoints to keep; >= 1.
  train.image_every = 500  # Steps between TensorBoard images (source, translated, target, ...).
  # How the step spreads over the devices (docs/parallelism.md): "pmap" splits the batch, one
  # slice per device; "mesh" is one jax.jit over a ("data", "spatial") device mesh that splits
  # the batch over "data" and each image's height over "spatial" (for images whose activations
  # do not fit one device). Same mathematics; checkpoints move between the two. Evaluation
  # follows it too; the 'cg' stage's CycleGAN trains under pmap either way.
  train.parallelism = "pmap"
  train.mesh_data = -1  # "mesh": devices along the batch axis; -1 = all the rest.
  # "mesh": devices along each image's height (a divisor of each process's device count and of
  # data.height). Every convolution then exchanges halo rows between them.
  train.mesh_spatial = 1

  # The 'cg' baseline (paper Table 2): CycleGAN (Zhu et al. 2017) between the source and the
  # target images with upstream's defaults (junyanz/pytorch-CycleGAN-and-pix2pix). It trains on
  # data.height x data.width images, data.global_batch of each domain per step; its log,
  # checkpoint and picture intervals are train's.
  cyclegan = config.cyclegan = ml_collections.ConfigDict()
  cyclegan.num_steps = 100_000  # Training steps (upstream: 200 epochs of max(|A|, |B|) images).
  # Constant learning rate up to this fraction of num_steps, then linear decay to 0 (upstream:
  # 100 epochs constant, 100 decaying).
  cyclegan.decay_from = 0.5
  cyclegan.learning_rate = 2e-4  # Adam, generators and discriminators.
  cyclegan.betas = (0.5, 0.999)  # Adam betas, generators and discriminators.
  cyclegan.gan_loss = "lsgan"  # Upstream's gan_mode: least squares.
  cyclegan.lambda_cycle = 10.0  # Weight of each cycle-consistency L1 (lambda_A = lambda_B).
  cyclegan.lambda_identity = 0.5  # Identity L1 weight, relative to lambda_cycle (0 = none).
  cyclegan.pool_size = 50  # Past translations the discriminators also see (0 = no pool).
  cyclegan.ngf = 64  # Generator width (resnet_9blocks).
  cyclegan.num_blocks = 9  # Generator residual blocks.
  cyclegan.ndf = 64  # PatchGAN width.
  cyclegan.n_layers = 3  # PatchGAN depth.
  # As model.generator.residual_output: False is upstream's CycleGAN; True starts both
  # generators as the identity (configs/demo.py, for a like-for-like comparison with G_img).
  cyclegan.residual_output = False
  # Source images per translation batch. Images are translated at their stored resolution
  # (the generators are fully convolutional), so labels and depth carry over unchanged.
  cyclegan.translate_batch = 1

  evaluation = config.eval = ml_collections.ConfigDict()
  # Target images per device per evaluation step (under train.parallelism='mesh': per "data"
  # row of the mesh, each split over its spatial devices).
  evaluation.per_device_batch = 1
  # Evaluate G_task during training every this many steps and at the last step (0 = only
  # evaluate.py evaluates): the report, curve and TensorBoard scalars evaluate.py writes for
  # that step, from the step's parameters in memory, into WORKDIR/eval.
  evaluation.every_steps = 0
  # Score predictions upsampled to each ground truth's own resolution (AdaptSegNet's and
  # ADVENT's scripts; the paper reports mIoU and says no more); False scores at the network
  # input size (faster, but not comparable with published numbers).
  evaluation.at_label_resolution = True
  evaluation.depth_min_m = 1e-3  # Depth metrics: true depths below are not scored, and
  evaluation.depth_max_m = 0.0  # above this cap (0 = no cap; 80 is KITTI depth's custom);
  # predictions are clipped to the same range (monodepth's evaluation).

  model = config.model = ml_collections.ConfigDict()
  model.num_classes = 10  # Virtual KITTI <-> KITTI class set (paper, Table 1).
  model.dtype = "float32"  # Compute dtype of every network ("bfloat16" for mixed precision).
  model.param_dtype = "float32"  # Storage dtype of the parameters.
  model.width = 1.0  # Channel multiplier for every network, CycleGAN too (< 1: tests, CPU demos).

  generator = model.generator = ml_collections.ConfigDict()
  generator.ngf = 64  # CycleGAN's generator width.
  generator.num_blocks = 9  # Residual blocks (CycleGAN resnet_9blocks; 6 also exists upstream).
  # Not the paper's: True makes G_img output clip(x + tanh(head)) with the head zero-initialised
  # (identity at step 0), for short CPU runs (configs/demo.py). PyTorch checkpoints and
  # parity assume False.
  generator.residual_output = False
  # How the two stride-2 transposed convolutions run (same parameters, same function):
  # "dilated" (XLA's transposed convolution), "subpixel" (one 2x2 convolution into the four
  # output phases; XLA:CPU computes the dilated form's kernel gradient ~20x slower), "auto"
  # (subpixel on CPU, dilated elsewhere).
  generator.upsampling = "auto"

  task_net = model.task_net = ml_collections.ConfigDict()
  # Fixed input normalisation for the encoder's pretrained weights: "torchvision" (ImageNet
  # RGB mean/std), "caffe" (BGR 0-255 minus mean, AdaptSegNet) or "none".
  task_net.input_norm = "torchvision"
  # How the encoder starts: "imagenet" (the paper: "initialized with the ImageNet pre-trained
  # weights"; a run stops before compiling when the file below is missing) or "random".
  task_net.encoder_init = "imagenet"
  # torchvision's ImageNet VGG16 file; $TORCH_HOME stands for torch's cache folder ($TORCH_HOME,
  # else $XDG_CACHE_HOME/torch, else ~/.cache/torch), where torchvision downloads it to.
  task_net.vgg16_weights = "$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth"
  task_net.aspp_dilations = (6, 12, 18, 24)  # DeepLab-v2 ASPP.
  # ASPP branches whose outputs are summed: 4 is DeepLab-v2's ASPP, which the paper names; 2
  # reproduces AdaptSegNet's early-return bug, for its released checkpoints.
  task_net.aspp_summed_branches = 4

  d_img = model.d_img = ml_collections.ConfigDict()
  d_img.ndf = 64  # PatchGAN width (CycleGAN).
  d_img.n_layers = 3  # PatchGAN depth (70x70 receptive field).

  d_out = model.d_out = ml_collections.ConfigDict()
  d_out.kind = "patch"  # "patch" (paper: "also formulated as a PatchGAN") or "fc" (AdaptSegNet).
  d_out.ndf = 64  # Discriminator width.
  d_out.n_layers = 3  # PatchGAN depth (ignored by "fc").
  return variants.apply_variant(config, variant)
