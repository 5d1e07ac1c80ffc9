//! `mailctl`: manage mail accounts and aliases. See the library docs.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mailctl::Cli::parse();
    // Not locked up front: the interactive prompt reads stdin too.
    let mut source = mailctl::FromReader(std::io::BufReader::new(std::io::stdin()));
    match mailctl::run(cli, &mut source) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mailctl: {e}");
            ExitCode::FAILURE
        }
    }
}
