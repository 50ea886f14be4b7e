//! A small git repository to give a task: a Python package whose one test passes, made in a
//! temporary directory whatever the machine's git identity.

use std::path::Path;
use std::process::Command;

/// The code the repository tests' prompt is about: a working cart total.
pub(crate) const CART: &str = "def total(prices):\n    \"\"\"The sum of the prices in the cart.\"\"\"\n    return sum(prices)\n";

/// The repository's own test of the cart.
pub(crate) const CART_TEST: &str = "import unittest\n\nfrom shop.cart import total\n\n\nclass TotalTest(unittest.TestCase):\n    def test_total(self):\n        self.assertEqual(total([1, 2]), 3)\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";

/// A prompt about the cart, so that the code memory finds `shop/cart.py` for it.
pub(crate) const CART_PROMPT: &str =
    "Add a greeting program next to the cart total in shop/cart.py";

/// Runs git in `dir` with a fixed identity; gives its standard output, trimmed.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The package `shop` with `cart.py` and its passing `test_cart.py`, committed on `main` in
/// `dir`; gives the commit.
pub(crate) fn source_repository(dir: &Path) -> String {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::create_dir_all(dir.join("shop")).expect("a package directory");
    std::fs::write(dir.join("shop/__init__.py"), "").expect("written");
    std::fs::write(dir.join("shop/cart.py"), CART).expect("written");
    std::fs::write(dir.join("test_cart.py"), CART_TEST).expect("written");
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "shop"]);
    git(dir, &["rev-parse", "HEAD"])
}
