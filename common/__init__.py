"""Code both glyph-guard services share: the deployment config, process trees and probes."""
