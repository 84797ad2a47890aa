"""What the autoencoder alone lets through: reconstructions of real test images, judged like generated images.

The latent generator can be no sharper than its decoder. For each variant (latent size, feature-matching weight),
the autoencoder is trained on S as the generator trains it, then 200 real test images per class are encoded and
decoded, and the reconstructions are judged by the reference classifier: accuracy, FID against the test split and
diversity ratio. The first variant is the baseline of the same run.

    python -m experiments.bench_autoencoder --variants 32:0 64:0 64:1      # latent_dim:perceptual_weight
    python -m experiments.bench_autoencoder --variants 64:1 64:1:60 64:1:30:64-128   # [:epochs[:channels]]

Epochs and channels default to the generator's (``autoencoder_epochs``, ``autoencoder_channels``).
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--variants", nargs="+", default=["32:0", "64:0", "64:1"])
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from fairforget.components.generator import GeneratorConfig
    from fairforget.components.generator.autoencoder import (ConvAutoencoder, fit_autoencoder,
                                                             fit_perceptual_network)
    from fairforget.components.quality import (QualityConfig, classifier_features, conditional_accuracy,
                                               diversity_ratios, frechet_distance, train_reference_classifier)
    from fairforget.pipelines.data_steps import load_current_data

    torch.set_num_threads(1)
    dataset = load_current_data(args.data_dir)
    defaults = GeneratorConfig()
    judge = train_reference_classifier(dataset, QualityConfig())
    train, test = dataset.split("train"), dataset.split("test")
    rows = np.concatenate([np.flatnonzero(test.labels == k)[:200] for k in range(dataset.num_classes)])
    real, labels = test.to_float_tensor_array()[rows], test.labels[rows]
    features_test = classifier_features(judge, test.images)
    features_real = classifier_features(judge, test.images[rows])
    results = []
    for variant in args.variants:
        fields = variant.split(":")
        latent_dim, weight = int(fields[0]), float(fields[1])
        epochs = int(fields[2]) if len(fields) > 2 else defaults.autoencoder_epochs
        channels = (tuple(int(c) for c in fields[3].split("-")) if len(fields) > 3
                    else defaults.autoencoder_channels)
        started = time.perf_counter()
        perceptual = None
        if weight > 0:
            perceptual = fit_perceptual_network(train.images, train.labels, dataset.num_classes,
                                                defaults.autoencoder_perceptual_epochs, defaults.seed + 4)
        torch.manual_seed(defaults.seed)
        model = ConvAutoencoder(tuple(train.images.shape[1:]), latent_dim, channels)
        fit_autoencoder(model, train.to_float_tensor_array(), epochs,
                        defaults.autoencoder_batch_size, defaults.autoencoder_learning_rate, defaults.seed,
                        progress=False, perceptual=perceptual, perceptual_weight=weight)
        seconds = time.perf_counter() - started
        with torch.no_grad():
            reconstructions = model(torch.from_numpy(real)).numpy()
        images = (np.clip(reconstructions, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        features = classifier_features(judge, images)
        diversity = diversity_ratios(features, labels, features_real, labels, dataset.num_classes)
        row = {"variant": variant, "seconds": seconds,
               "rmse": float(np.sqrt(np.mean((reconstructions - real) ** 2))),
               "accuracy": conditional_accuracy(judge, images, labels),
               "fid": frechet_distance(features, features_test),
               "diversity_ratio": float(np.mean(list(diversity.values())))}
        results.append(row)
        base = results[0]
        print(f"bench_autoencoder: latent {latent_dim:3d}, perceptual {weight:g}, {epochs} epochs, channels "
              f"{'-'.join(map(str, channels))}: {seconds:6.1f} s, RMSE "
              f"{row['rmse']:.4f}, judged accuracy {row['accuracy']:.3f}, FID {row['fid']:.1f} (x{row['fid'] / base['fid']:.2f}"
              f" of the first), diversity {row['diversity_ratio']:.3f}; the judge on the real images "
              f"{conditional_accuracy(judge, test.images[rows], labels):.3f}", flush=True)
    return results


if __name__ == "__main__":
    main()
