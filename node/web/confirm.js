// confirmAction asks for a yes or no in the page's own dialog and resolves to true on yes.

import { $ } from './util.js';

export function confirmAction(text) {
  const dlg = $('confirm-dialog');
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'yes'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
    $('confirm-no').focus();
  });
}
